//! Recording (being written).
