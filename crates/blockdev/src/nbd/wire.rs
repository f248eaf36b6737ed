//! The NBD transmission phase as the kernel's `nbd` driver speaks it (Linux
//! `include/uapi/linux/nbd.h`; the NBD protocol document, "Transmission"): a
//! 28-byte request, a 16-byte simple reply, all fields big-endian. No I/O here.

/// Request magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const REPLY_MAGIC: u32 = 0x6744_6698;
/// Size of a request header.
pub const REQUEST_SIZE: usize = 28;
/// Size of a simple reply header.
pub const REPLY_SIZE: usize = 16;

/// Commands (the low 16 bits of the request's type field).
pub mod cmd {
    /// Read `len` bytes at `from`.
    pub const READ: u16 = 0;
    /// Write the `len` bytes that follow the request.
    pub const WRITE: u16 = 1;
    /// Disconnect: the client sends nothing more.
    pub const DISC: u16 = 2;
    /// Flush the write-back cache.
    pub const FLUSH: u16 = 3;
    /// Discard (deallocate) the range.
    pub const TRIM: u16 = 4;
    /// Write zeroes to the range.
    pub const WRITE_ZEROES: u16 = 6;
}

/// Command flags (the high 16 bits of the type field).
pub mod cmd_flag {
    /// Forced unit access: the write is durable when answered.
    pub const FUA: u16 = 1 << 0;
    /// Write zeroes must not deallocate.
    pub const NO_HOLE: u16 = 1 << 1;
}

/// Transmission flags the server gives the kernel (NBD_SET_FLAGS).
pub mod flags {
    /// The other flags are valid.
    pub const HAS_FLAGS: u32 = 1 << 0;
    /// The device is read-only.
    pub const READ_ONLY: u32 = 1 << 1;
    /// The server takes FLUSH.
    pub const SEND_FLUSH: u32 = 1 << 2;
    /// The server takes the FUA flag.
    pub const SEND_FUA: u32 = 1 << 3;
    /// The server takes TRIM.
    pub const SEND_TRIM: u32 = 1 << 5;
    /// The server takes WRITE_ZEROES.
    pub const SEND_WRITE_ZEROES: u32 = 1 << 6;
}

/// errno values a reply carries.
pub mod errno {
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Invalid request.
    pub const EINVAL: u32 = 22;
    /// Beyond the end of the device.
    pub const ENOSPC: u32 = 28;
    /// Not supported.
    pub const EOPNOTSUPP: u32 = 95;
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags ([`cmd_flag`]).
    pub flags: u16,
    /// Command ([`cmd`]).
    pub cmd: u16,
    /// Opaque cookie echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub from: u64,
    /// Byte length.
    pub len: u32,
}

/// A request header that cannot be served: the stream is out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("NBD request with magic {0:#010x}, not {REQUEST_MAGIC:#010x}")]
pub struct BadMagic(pub u32);

fn be32(b: &[u8; REQUEST_SIZE], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8; REQUEST_SIZE], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

impl Request {
    /// Decodes a request header.
    pub fn decode(b: &[u8; REQUEST_SIZE]) -> Result<Self, BadMagic> {
        let magic = be32(b, 0);
        if magic != REQUEST_MAGIC {
            return Err(BadMagic(magic));
        }
        let ty = be32(b, 4);
        Ok(Self {
            flags: (ty >> 16) as u16,
            cmd: ty as u16,
            handle: be64(b, 8),
            from: be64(b, 16),
            len: be32(b, 24),
        })
    }

    /// Encodes a request header (the kernel's side; for tests and tools).
    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        let ty = (u32::from(self.flags) << 16) | u32::from(self.cmd);
        b[4..8].copy_from_slice(&ty.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.from.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// A simple reply header: `error` is 0 or an errno value.
pub fn reply(handle: u64, error: u32) -> [u8; REPLY_SIZE] {
    let mut b = [0u8; REPLY_SIZE];
    b[0..4].copy_from_slice(&REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

/// Decodes a simple reply header: (error, handle), or `None` on a bad magic.
pub fn decode_reply(b: &[u8; REPLY_SIZE]) -> Option<(u32, u64)> {
    let mut m = [0u8; 4];
    m.copy_from_slice(&b[0..4]);
    if u32::from_be_bytes(m) != REPLY_MAGIC {
        return None;
    }
    let mut e = [0u8; 4];
    e.copy_from_slice(&b[4..8]);
    let mut h = [0u8; 8];
    h.copy_from_slice(&b[8..16]);
    Some((u32::from_be_bytes(e), u64::from_be_bytes(h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A write with FUA as the kernel sends it (nbd_send_cmd: type = cmd |
    /// NBD_CMD_FLAG_FUA, both in one big-endian word).
    #[test]
    fn known_bytes() {
        let b: [u8; REQUEST_SIZE] = [
            0x25, 0x60, 0x95, 0x13, // magic
            0x00, 0x01, 0x00, 0x01, // FUA | WRITE
            0, 0, 0, 0, 0, 0, 0, 7, // handle
            0, 0, 0, 0, 0, 0, 0x10, 0, // from 4096
            0, 0, 0x10, 0, // len 4096
        ];
        let r = Request::decode(&b).unwrap();
        assert_eq!(
            r,
            Request {
                flags: cmd_flag::FUA,
                cmd: cmd::WRITE,
                handle: 7,
                from: 4096,
                len: 4096
            }
        );
        assert_eq!(r.encode(), b);
        assert_eq!(
            reply(7, errno::EIO),
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7]
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(b in proptest::array::uniform28(any::<u8>())) {
            if let Ok(r) = Request::decode(&b) {
                prop_assert_eq!(r.encode(), b);
            }
        }

        #[test]
        fn reply_round_trips(h in any::<u64>(), e in any::<u32>()) {
            prop_assert_eq!(decode_reply(&reply(h, e)), Some((e, h)));
        }
    }
}
