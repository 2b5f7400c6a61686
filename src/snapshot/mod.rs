//! The snapshot file itself: the bbolt format ([`page`]), its walker ([`bbolt`]) and the checks built on it
//! ([`verify`]: the SHA-256 trailer, etcdutl's status; [`hashkv`]: etcd's HashKV, to compare
//! the file with the members). Pure functions over bytes and files; nothing here touches the
//! network.

pub mod bbolt;
pub mod build;
pub mod hashkv;
pub mod page;
pub mod verify;
