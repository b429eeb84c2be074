//! The pre-seeded container image store: the containers/storage overlay layout of
//! the images a node needs at boot ([`cstorage`]), written as a read-only EROFS
//! image ([`erofs`]) into the `KIOS_STORE` partition.

pub mod cstorage;
pub mod erofs;
