//! kios-init: the PID 1 of kiOS. (being written)
fn main() {}
