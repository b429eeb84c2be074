//! OCI images: local image layouts and layers -> trees. (being written)
