//! The unified kernel image (UKI): stub + sections. (being written)
