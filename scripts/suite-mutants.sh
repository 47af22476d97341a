#!/usr/bin/env bash
# Proves the conformance suite can fail: each mutation makes the loopback reference backend (or one
# of its remote's fault knobs) lie, in a scratch worktree of HEAD, and prints which scenarios catch
# it. Every mutation must be caught by at least one scenario. Takes a few minutes; not part of CI.
set -u
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
git -C "$repo" worktree add -q --detach "$work" HEAD
trap 'git -C "$repo" worktree remove --force "$work"' EXIT
cd "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/mutants}
missed=0
L=conformance/src/loopback
run() { # name file python-replacement
  name=$1; file=$2; old=$3; new=$4
  cp $file /tmp/mut.bak
  python3 -c "import sys;p=sys.argv[1];s=open(p).read();assert sys.argv[2] in s, 'pattern missing';open(p,'w').write(s.replace(sys.argv[2],sys.argv[3],1))" "$file" "$old" "$new" || { echo "$name: PATTERN MISSING"; return; }
  out=$(nice cargo test -q -p fwipc-conformance --test loopback --test zero_alloc 2>&1)
  fails=$(echo "$out" | grep -E '^    [a-z_:]+$' | sed 's/^ *//' | tr '\n' ' ')
  echo "$name: caught by -> ${fails:-NOTHING}"
  [ -n "$fails" ] || missed=$((missed + 1))
  cp /tmp/mut.bak $file
}
run hold-lies $L/remote.rs 'Fault::Hold => {
                    st.held.push(rec);
                    return true;
                }' 'Fault::Hold => Fault::None,'
run timeout-frees-buffer $L/transport.rs 'm.state = St::Abandoned;' 's.free(&mut m); return;'
run shutdown-no-wake $L/transport.rs 'm.state = St::Shut;' 'let _ = 0;'
run bulk-tail-short $L/remote.rs 'let n = st.stored.len().min(op.len);' 'let n = st.stored.len().min(op.len).saturating_sub(1);'
run remote-lifo $L/remote.rs 'self.shared.requests.lock().pop_front()' 'self.shared.requests.lock().pop_back()'
run duplicate-completes-twice $L/transport.rs 'St::Done | St::Failed(_) => Counters::bump(&self.counters.duplicate_replies),' 'St::Done | St::Failed(_) => Counters::bump(&self.counters.completed),'
run no-magic-check $L/transport.rs 'if r.magic != wire::MAGIC || r.kind != wire::KIND_REPLY {' 'if false {'
run drop-knob-lies $L/remote.rs 'Fault::Drop => {
                    st.dropped.push(rec);
                    return true;
                }' 'Fault::Drop => Fault::None,'
run no-reclaim-on-shutdown $L/transport.rs 'let _ = s.pool.reclaim(i);' 'break;'
run alloc-in-send $L/transport.rs 'Counters::bump(&s.counters.sent);' 'Counters::bump(&s.counters.sent); std::hint::black_box(Vec::<u8>::with_capacity(8));'
run notify-drops $L/remote.rs 'q.push_back((data, payload.len()));' 'if payload.len() > 8 { q.push_back((data, payload.len())); }'
run reset-knob-lies $L/remote.rs 'st.held.clear();' 'let held = core::mem::take(&mut st.held); drop(st); for r in held { self.answer(r, Fault::None); } return;'
run late-reply-delivered $L/transport.rs 'if m.state == St::Abandoned {
                    Counters::bump(&self.counters.late_replies);
                    self.free(&mut m);
                    return;
                }' 'if m.state == St::Abandoned { m.state = St::InFlight; }'
echo "missed: $missed"
[ "$missed" -eq 0 ]
