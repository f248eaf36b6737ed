//! One type for a namespace's block device, whichever kernel front end serves
//! it: ublk where the kernel has it (Linux 6.0+, `ublk_drv`), else NBD. The
//! host daemon holds [`Disk`]s and does not care which.

use std::path::Path;
use std::str::FromStr;

use crate::io::{BlockIo, Geometry, SinglePath};
use crate::nbd::{NbdDevice, NbdError};
use crate::ublk::{self, Queues, UblkDevice, UblkError};
use nvmf_host::Controller;

/// Which front end to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// ublk if `/dev/ublk-control` exists or `modprobe ublk_drv` makes it,
    /// else NBD; NBD too if ublk is there but making the device fails.
    #[default]
    Auto,
    /// ublk only.
    Ublk,
    /// NBD only.
    Nbd,
}

impl FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "ublk" => Ok(Self::Ublk),
            "nbd" => Ok(Self::Nbd),
            o => Err(format!("'{o}': a block device kind is auto, ublk or nbd")),
        }
    }
}

impl Choice {
    /// Its name, as [`FromStr`] takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ublk => "ublk",
            Self::Nbd => "nbd",
        }
    }
}

/// The front end a [`Disk`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/dev/ublkbN`.
    Ublk,
    /// `/dev/nbdN`.
    Nbd,
}

impl Kind {
    /// "ublk" or "nbd".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ublk => "ublk",
            Self::Nbd => "nbd",
        }
    }
}

/// Why a device could not be attached, resized or detached.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The namespace is not active on the controller.
    #[error("{0}")]
    Namespace(#[from] nvmf_host::Error),
    /// ublk failed.
    #[error("ublk: {0}")]
    Ublk(#[from] UblkError),
    /// NBD failed.
    #[error("nbd: {0}")]
    Nbd(#[from] NbdError),
}

/// A namespace as a local block device.
#[derive(Debug)]
pub enum Disk {
    /// Through ublk.
    Ublk(UblkDevice),
    /// Through NBD.
    Nbd(NbdDevice),
}

impl Disk {
    /// Namespace `nsid` of `ctrl` as a block device of kind `choice`, one ublk
    /// queue per I/O queue of `ctrl`.
    pub async fn attach(choice: Choice, ctrl: Controller, nsid: u32) -> Result<Self, DiskError> {
        let g = Geometry::of(&ctrl, nsid)?;
        let q = Queues::of(&ctrl);
        Self::attach_io(choice, SinglePath::new(ctrl, nsid), g, q).await
    }

    /// A namespace of geometry `g`, whose operations `io` runs, as a block
    /// device of kind `choice`; `q` shapes ublk's queues (NBD has one socket).
    pub async fn attach_io<B: BlockIo>(
        choice: Choice,
        io: B,
        g: Geometry,
        q: Queues,
    ) -> Result<Self, DiskError> {
        match choice {
            Choice::Nbd => Ok(Self::Nbd(NbdDevice::attach_io(io, g).await?)),
            Choice::Ublk => Ok(Self::Ublk(UblkDevice::attach_io(io, g, q).await?)),
            Choice::Auto => {
                let have = tokio::task::spawn_blocking(ublk::ensure_driver)
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false);
                if have {
                    match UblkDevice::attach_io(io.clone(), g, q).await {
                        Ok(d) => return Ok(Self::Ublk(d)),
                        Err(e) => tracing::warn!(
                            "namespace {}: ublk device failed ({e}); using NBD",
                            g.nsid
                        ),
                    }
                }
                Ok(Self::Nbd(NbdDevice::attach_io(io, g).await?))
            }
        }
    }

    /// The front end.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Ublk(_) => Kind::Ublk,
            Self::Nbd(_) => Kind::Nbd,
        }
    }

    /// The device node.
    pub fn path(&self) -> &Path {
        match self {
            Self::Ublk(d) => d.path(),
            Self::Nbd(d) => d.path(),
        }
    }

    /// The namespace it serves.
    pub fn nsid(&self) -> u32 {
        match self {
            Self::Ublk(d) => d.nsid(),
            Self::Nbd(d) => d.nsid(),
        }
    }

    /// Size in blocks, as last set.
    pub fn blocks(&self) -> u64 {
        match self {
            Self::Ublk(d) => d.blocks(),
            Self::Nbd(d) => d.blocks(),
        }
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        match self {
            Self::Ublk(d) => d.block_size(),
            Self::Nbd(d) => d.block_size(),
        }
    }

    /// Whether [`Self::resize`] works on the live device. NBD: always. ublk:
    /// with UBLK_F_UPDATE_SIZE only; otherwise a caller shows a new size by
    /// detaching the device and attaching it again.
    pub fn can_resize(&self) -> bool {
        match self {
            Self::Ublk(d) => d.can_resize(),
            Self::Nbd(_) => true,
        }
    }

    /// Gives the live device a new size in blocks.
    pub async fn resize(&self, blocks: u64) -> Result<(), DiskError> {
        match self {
            Self::Ublk(d) => Ok(d.resize(blocks).await?),
            Self::Nbd(d) => Ok(d.resize(blocks).await?),
        }
    }

    /// Takes the device away.
    pub async fn detach(self) -> Result<(), DiskError> {
        match self {
            Self::Ublk(d) => Ok(d.detach().await?),
            Self::Nbd(d) => Ok(d.detach().await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses() {
        for c in [Choice::Auto, Choice::Ublk, Choice::Nbd] {
            assert_eq!(c.as_str().parse::<Choice>(), Ok(c));
        }
        assert!("loop".parse::<Choice>().is_err());
        assert_eq!(Choice::default(), Choice::Auto);
    }

    #[test]
    fn queues_stay_in_range() {
        assert_eq!(Queues::new(0, 0), Queues { count: 1, depth: 1 });
        assert_eq!(
            Queues::new(4, 1024),
            Queues {
                count: 4,
                depth: 128
            }
        );
        assert_eq!(
            Queues::new(2, 32),
            Queues {
                count: 2,
                depth: 32
            }
        );
    }
}
