//! mask_body (being written).
