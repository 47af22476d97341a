//! Placeholder: filled by its backend issue.
#![cfg_attr(not(feature = "std"), no_std)]
