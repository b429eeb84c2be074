//! The GPT disk. (being written)

pub mod esp;
