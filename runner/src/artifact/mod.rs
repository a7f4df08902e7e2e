//! Artifacts: the files a stage keeps for later stages, and the ones it gets from the stages it
//! needs. [`archive`] is the format and the file work, [`transfer`] the streaming to and from the
//! engine.

pub mod archive;
pub mod transfer;

pub use archive::{ArtifactError, Unpacked, pack, resolve, unpack};
pub use transfer::{TransferError, UPLOAD_NAME, download_and_unpack, pack_and_upload};
