//! The pre-seeded image store written into the store partition.

pub mod cstorage;
