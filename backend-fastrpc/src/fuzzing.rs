//! Fuzz entry points (one per parser of remote input); placeholder filled below.
