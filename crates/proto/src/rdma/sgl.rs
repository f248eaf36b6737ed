//! SGL1 of an NVMe/RDMA command (NVMe-oF 1.1 §7.3 "RDMA Transport"; NVMe Base
//! 2.0 §4.3.2 "Scatter Gather List", Keyed SGL Data Block descriptor).
//!
//! NVMe/RDMA carries a command's data in one of two ways:
//!
//! * a **Keyed SGL Data Block** descriptor (type 4h): the host's registered
//!   buffer, named by a 64-bit address, a 24-bit length and a 32-bit key, that
//!   the controller reads with RDMA READ (write data) or fills with RDMA WRITE
//!   (read data). Subtype 0h is a plain address; subtype Fh ("Invalidate Key")
//!   asks the controller to invalidate the key remotely with the response
//!   (SEND with Invalidate). Layout: address @0 (8 bytes), length @8 (3
//!   bytes), key @11 (4 bytes), type @15 (Linux `struct nvme_keyed_sgl_desc`).
//! * a **Data Block** descriptor with the **Offset** subtype (01h): the data is
//!   in the command capsule after the SQE, at `address` bytes from the start of
//!   the in-capsule data, `length` bytes long (Linux host `nvme_rdma_map_sg_inline`,
//!   nvmet `nvmet_rdma_map_sgl_inline`).
//!
//! A command without data carries a keyed descriptor of length 0 (Linux host
//! `nvme_rdma_set_sg_null`: type 40h, all else 0).

use crate::sqe::{SglDescriptor, Sqe, SGL_ICD};
use crate::status::Status;

/// Descriptor type Keyed SGL Data Block (Base 2.0 Figure 93; Linux `NVME_KEY_SGL_FMT_DATA_DESC`).
pub const SGL_TYPE_KEYED_DATA_BLOCK: u8 = 0x4;
/// Descriptor type Data Block (Linux `NVME_SGL_FMT_DATA_DESC`).
pub const SGL_TYPE_DATA_BLOCK: u8 = 0x0;
/// Subtype Address (Linux `NVME_SGL_FMT_ADDRESS`).
pub const SGL_SUBTYPE_ADDRESS: u8 = 0x0;
/// Subtype Offset (Linux `NVME_SGL_FMT_OFFSET`).
pub const SGL_SUBTYPE_OFFSET: u8 = 0x1;
/// Subtype Invalidate Key (Linux `NVME_SGL_FMT_INVALIDATE`).
pub const SGL_SUBTYPE_INVALIDATE: u8 = 0xF;
/// Type byte of a keyed descriptor, address subtype.
pub const SGL_KEYED: u8 = SGL_TYPE_KEYED_DATA_BLOCK << 4 | SGL_SUBTYPE_ADDRESS;
/// Type byte of a keyed descriptor whose key the controller invalidates.
pub const SGL_KEYED_INVALIDATE: u8 = SGL_TYPE_KEYED_DATA_BLOCK << 4 | SGL_SUBTYPE_INVALIDATE;
/// Largest length of a keyed descriptor: the field is 24 bits.
pub const MAX_KEYED_LEN: u32 = 0x00FF_FFFF;

/// Where an NVMe/RDMA command's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaSgl {
    /// No data (length 0).
    None,
    /// In the capsule, `len` bytes at `offset` after the SQE.
    InCapsule {
        /// Offset into the in-capsule data.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// In the host's registered memory.
    Keyed {
        /// Remote address.
        addr: u64,
        /// Length (24 bits).
        len: u32,
        /// Remote key.
        key: u32,
        /// The host asks for the key to be invalidated with the response.
        invalidate: bool,
    },
}

/// Why SGL1 cannot be honoured; [`SglError::status`] is the command's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SglError {
    /// A descriptor type or subtype NVMe/RDMA does not carry in SGL1.
    #[error("SGL descriptor type {0:#04x} is not supported over RDMA")]
    DescriptorType(u8),
    /// In-capsule data beyond what the controller takes (its IOCCSZ).
    #[error("in-capsule data at {offset}+{len} exceeds the {max} bytes allowed")]
    OffsetInvalid {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// In-capsule data size.
        max: u32,
    },
    /// In-capsule data beyond what the capsule carried.
    #[error("in-capsule data at {offset}+{len} but the capsule holds {received} bytes")]
    LengthInvalid {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// In-capsule bytes received.
        received: usize,
    },
    /// A keyed buffer larger than the controller's MDTS.
    #[error("keyed SGL of {len} bytes exceeds the {max} byte transfer limit")]
    TooLarge {
        /// Length.
        len: u32,
        /// MDTS in bytes.
        max: u32,
    },
}

impl SglError {
    /// The status the command completes with (with DNR):
    ///
    /// * unsupported type or subtype: SGL Descriptor Type Invalid (11h). nvmet
    ///   answers this for an unknown type and Invalid Field (02h) for an
    ///   unknown subtype of a known type; Base 2.0 §4.3.2 names 11h for "a type
    ///   the controller does not support", which covers both;
    /// * in-capsule data past the controller's in-capsule size: SGL Offset
    ///   Invalid (16h), as nvmet;
    /// * in-capsule data past what arrived: Data SGL Length Invalid (0Fh);
    /// * beyond MDTS: Invalid Field in Command (02h), as the TCP queue, nvmet and
    ///   SPDK (Base 2.0 §5.15.2.2 MDTS).
    pub fn status(&self) -> Status {
        match self {
            Self::DescriptorType(_) => Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr(),
            Self::OffsetInvalid { .. } => Status::SGL_OFFSET_INVALID.dnr(),
            Self::LengthInvalid { .. } => Status::DATA_SGL_LENGTH_INVALID.dnr(),
            Self::TooLarge { .. } => Status::INVALID_FIELD.dnr(),
        }
    }
}

impl RdmaSgl {
    /// Reads SGL1 of `sqe` without limits other than the format.
    pub fn from_descriptor(d: &SglDescriptor) -> Result<Self, SglError> {
        let ty = d.type_byte >> 4;
        let sub = d.type_byte & 0xF;
        match (ty, sub) {
            (SGL_TYPE_KEYED_DATA_BLOCK, SGL_SUBTYPE_ADDRESS | SGL_SUBTYPE_INVALIDATE) => {
                let len = d.length & MAX_KEYED_LEN;
                if len == 0 {
                    return Ok(Self::None);
                }
                let key = (d.length >> 24)
                    | u32::from(d.reserved[0]) << 8
                    | u32::from(d.reserved[1]) << 16
                    | u32::from(d.reserved[2]) << 24;
                Ok(Self::Keyed {
                    addr: d.address,
                    len,
                    key,
                    invalidate: sub == SGL_SUBTYPE_INVALIDATE,
                })
            }
            (SGL_TYPE_DATA_BLOCK, SGL_SUBTYPE_OFFSET) => {
                if d.length == 0 {
                    return Ok(Self::None);
                }
                let offset = u32::try_from(d.address).map_err(|_| SglError::OffsetInvalid {
                    offset: d.address,
                    len: d.length,
                    max: 0,
                })?;
                Ok(Self::InCapsule {
                    offset,
                    len: d.length,
                })
            }
            _ => Err(SglError::DescriptorType(d.type_byte)),
        }
    }

    /// Reads SGL1 of a received command and checks it against what the
    /// controller can honour: `icd_received` bytes arrived after the SQE,
    /// `max_icd` is the in-capsule data size it advertises (IOCCSZ × 16 − 64),
    /// `max_data_len` its MDTS in bytes.
    pub fn parse(
        sqe: &Sqe,
        icd_received: usize,
        max_icd: u32,
        max_data_len: u32,
    ) -> Result<Self, SglError> {
        let s = Self::from_descriptor(&sqe.sgl1)?;
        match s {
            Self::InCapsule { offset, len } => {
                let end = u64::from(offset) + u64::from(len);
                if end > u64::from(max_icd) {
                    return Err(SglError::OffsetInvalid {
                        offset: offset.into(),
                        len,
                        max: max_icd,
                    });
                }
                if end > icd_received as u64 {
                    return Err(SglError::LengthInvalid {
                        offset: offset.into(),
                        len,
                        received: icd_received,
                    });
                }
            }
            Self::Keyed { len, .. } if len > max_data_len => {
                return Err(SglError::TooLarge {
                    len,
                    max: max_data_len,
                });
            }
            _ => {}
        }
        Ok(s)
    }

    /// The descriptor a host puts in SGL1 (a keyed length above 24 bits is
    /// cut to 24 bits: callers keep buffers within [`MAX_KEYED_LEN`]).
    pub fn to_descriptor(&self) -> SglDescriptor {
        match *self {
            Self::None => SglDescriptor {
                address: 0,
                length: 0,
                reserved: [0; 3],
                type_byte: SGL_KEYED,
            },
            Self::InCapsule { offset, len } => SglDescriptor {
                address: offset.into(),
                length: len,
                reserved: [0; 3],
                type_byte: SGL_ICD,
            },
            Self::Keyed {
                addr,
                len,
                key,
                invalidate,
            } => {
                let k = key.to_le_bytes();
                SglDescriptor {
                    address: addr,
                    length: (len & MAX_KEYED_LEN) | u32::from(k[0]) << 24,
                    reserved: [k[1], k[2], k[3]],
                    type_byte: if invalidate {
                        SGL_KEYED_INVALIDATE
                    } else {
                        SGL_KEYED
                    },
                }
            }
        }
    }

    /// Bytes of data the descriptor names.
    pub fn len(&self) -> u32 {
        match *self {
            Self::None => 0,
            Self::InCapsule { len, .. } | Self::Keyed { len, .. } => len,
        }
    }

    /// True when it names no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqe::io_opcode;

    fn sqe_with(d: SglDescriptor) -> Sqe {
        let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 8, false);
        s.sgl1 = d;
        s
    }

    #[test]
    fn keyed_layout_matches_linux() {
        // nvme_keyed_sgl_desc: addr le64 @0, length le24 @8, key le32 @11, type @15.
        let k = RdmaSgl::Keyed {
            addr: 0x1122_3344_5566_7788,
            len: 0x01_2345,
            key: 0xAABB_CCDD,
            invalidate: true,
        };
        let b = k.to_descriptor().encode();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..11], &[0x45, 0x23, 0x01]);
        assert_eq!(&b[11..15], &[0xDD, 0xCC, 0xBB, 0xAA]);
        assert_eq!(b[15], 0x4F);
        assert_eq!(RdmaSgl::from_descriptor(&SglDescriptor::decode(&b)), Ok(k));
        let plain = RdmaSgl::Keyed {
            addr: 4096,
            len: MAX_KEYED_LEN,
            key: 7,
            invalidate: false,
        };
        let d = plain.to_descriptor();
        assert_eq!(d.type_byte, 0x40);
        assert_eq!(RdmaSgl::from_descriptor(&d), Ok(plain));
    }

    #[test]
    fn null_and_in_capsule() {
        // nvme_rdma_set_sg_null: type 40h, everything else 0.
        let n = RdmaSgl::None.to_descriptor().encode();
        assert_eq!(n[15], 0x40);
        assert!(n[..15].iter().all(|&x| x == 0));
        assert_eq!(
            RdmaSgl::from_descriptor(&SglDescriptor::decode(&n)),
            Ok(RdmaSgl::None)
        );
        // A keyed descriptor of length 0 with an invalidate subtype and a key is no data too.
        let mut z = SglDescriptor::decode(&n);
        z.type_byte = 0x4F;
        z.reserved = [1, 2, 3];
        assert_eq!(RdmaSgl::from_descriptor(&z), Ok(RdmaSgl::None));
        let ic = SglDescriptor::in_capsule(4096);
        assert_eq!(
            RdmaSgl::from_descriptor(&ic),
            Ok(RdmaSgl::InCapsule {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(
            RdmaSgl::InCapsule {
                offset: 0,
                len: 4096
            }
            .to_descriptor(),
            ic
        );
        assert_eq!(
            RdmaSgl::from_descriptor(&SglDescriptor::in_capsule(0)),
            Ok(RdmaSgl::None)
        );
    }

    #[test]
    fn other_types_are_refused() {
        for t in [0x00u8, 0x02, 0x0F, 0x41, 0x4E, 0x5A, 0x30, 0x20, 0xFF] {
            let d = SglDescriptor {
                address: 0,
                length: 512,
                reserved: [0; 3],
                type_byte: t,
            };
            let e = RdmaSgl::from_descriptor(&d).unwrap_err();
            assert_eq!(e, SglError::DescriptorType(t));
            assert_eq!(e.status(), Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr());
        }
    }

    #[test]
    fn limits() {
        // In-capsule past IOCCSZ: SGL Offset Invalid, as nvmet.
        let mut d = SglDescriptor::in_capsule(4096);
        d.address = 1;
        let e = RdmaSgl::parse(&sqe_with(d), 8192, 4096, 1 << 20).unwrap_err();
        assert_eq!(e.status(), Status::SGL_OFFSET_INVALID.dnr());
        // An offset that does not fit 32 bits.
        d.address = 1 << 40;
        assert_eq!(
            RdmaSgl::parse(&sqe_with(d), 8192, 8192, 1 << 20)
                .unwrap_err()
                .status(),
            Status::SGL_OFFSET_INVALID.dnr()
        );
        // In-capsule past what arrived.
        let e = RdmaSgl::parse(
            &sqe_with(SglDescriptor::in_capsule(4096)),
            4095,
            8192,
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e.status(), Status::DATA_SGL_LENGTH_INVALID.dnr());
        // Offset within the capsule is honoured.
        let mut d = SglDescriptor::in_capsule(100);
        d.address = 28;
        assert_eq!(
            RdmaSgl::parse(&sqe_with(d), 128, 128, 1 << 20),
            Ok(RdmaSgl::InCapsule {
                offset: 28,
                len: 100
            })
        );
        // Keyed beyond MDTS.
        let k = RdmaSgl::Keyed {
            addr: 0,
            len: (1 << 20) + 1,
            key: 1,
            invalidate: false,
        };
        let e = RdmaSgl::parse(&sqe_with(k.to_descriptor()), 0, 0, 1 << 20).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_FIELD.dnr());
        assert!(RdmaSgl::parse(&sqe_with(k.to_descriptor()), 0, 0, 2 << 20).is_ok());
        assert_eq!(k.len(), (1 << 20) + 1);
        assert!(RdmaSgl::None.is_empty());
    }
}
