pub mod erofs;
