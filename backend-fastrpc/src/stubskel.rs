//! Stub/skel generator (filled below).
