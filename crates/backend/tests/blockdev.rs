//! Block device backend tests.
//!
//! Real block devices are provided by attaching a sparse temporary file to a
//! loop device with `losetup` (needs root and loop support). When that is
//! not possible the loop tests print a notice and pass; the ioctl plumbing
//! is still covered by the unit test that runs the ioctls on a regular file
//! (ENOTTY) and by `not_a_block_device` below.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pattern, split};
use nvmf_backend::{open_block_device, Backend, BackendError, BlockDevBackend};

const MIB: u64 = 1 << 20;

/// A loop device over a temporary sparse file; detached on drop.
struct LoopDev {
    dev: PathBuf,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDev {
    fn attach(size: u64) -> Option<LoopDev> {
        let dir = tempfile::tempdir_in("/tmp").ok()?;
        let backing = dir.path().join("backing.img");
        std::fs::File::create(&backing).ok()?.set_len(size).ok()?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let dev = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        Some(LoopDev {
            dev,
            backing,
            _dir: dir,
        })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn read_vec(b: &dyn Backend, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xEEu8; len];
    b.read_at(off, &mut v).unwrap();
    v
}

#[test]
fn not_a_block_device() {
    let f = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    f.as_file().set_len(MIB).unwrap();
    assert!(matches!(
        open_block_device(f.path(), None),
        Err(BackendError::InvalidConfig(_))
    ));
    assert!(matches!(
        open_block_device(Path::new("/nonexistent/dev"), None),
        Err(BackendError::Io { .. })
    ));
}

#[test]
fn loop_device_io() {
    let Some(lo) = LoopDev::attach(32 * MIB) else {
        return;
    };
    let b = BlockDevBackend::open(&lo.dev, None).unwrap();
    let info = b.info().clone();
    eprintln!("{}", info.description);
    assert_eq!(info.block_size, b.device_block_size());
    assert_eq!(info.capacity_bytes(), 32 * MIB);
    assert!(!info.volatile && info.may_block);
    assert!(info.supports_discard, "loop devices support write-zeroes");

    // Exclusive open: a second opener is refused while we hold it.
    assert!(open_block_device(&lo.dev, None).is_err());

    // Round trips: unaligned and split buffers (bounced when O_DIRECT).
    let data = pattern(1, 3 * MIB as usize + 4096);
    b.write_at(MIB, &split(&data, &[4096, 3, 509, 70000]), false)
        .unwrap();
    assert_eq!(read_vec(&b, MIB, data.len()), data);
    let fua = pattern(2, 8192);
    b.write_at(0, &[&fua], true).unwrap();
    b.flush().unwrap();
    assert_eq!(read_vec(&b, 0, 8192), fua);
    // The data went through to the backing file.
    let raw = std::fs::read(&lo.backing).unwrap();
    assert_eq!(&raw[..8192], &fua[..]);
    assert_eq!(&raw[MIB as usize..MIB as usize + data.len()], &data[..]);

    // Discard (zeroing) and write zeroes.
    b.discard(MIB, MIB).unwrap();
    b.write_zeroes(2 * MIB + 512, 4096).unwrap();
    let mut expect = data.clone();
    expect[..MIB as usize].fill(0);
    expect[(MIB + 512) as usize..(MIB + 4608) as usize].fill(0);
    assert_eq!(read_vec(&b, MIB, data.len()), expect);

    // Bounds.
    let mut buf = vec![0u8; 1024];
    assert!(matches!(
        b.read_at(32 * MIB - 512, &mut buf),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.discard(32 * MIB, 512),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.write_zeroes(0, u64::MAX),
        Err(BackendError::OutOfRange { .. })
    ));
}

#[test]
fn loop_device_block_size_override() {
    let Some(lo) = LoopDev::attach(8 * MIB + 2048) else {
        return;
    };
    {
        let b = open_block_device(&lo.dev, Some(4096)).unwrap();
        assert_eq!(b.info().block_size, 4096);
        assert_eq!(
            b.info().num_blocks,
            2048,
            "capacity rounds down to whole blocks"
        );
        let data = pattern(3, 3 * 4096);
        b.write_at(4096, &[&data], true).unwrap();
        assert_eq!(read_vec(&*b, 4096, data.len()), data);
        assert!(matches!(
            b.read_at(512, &mut [0u8; 4096]),
            Err(BackendError::Misaligned { .. })
        ));
    }
    for bad in [256, 1000] {
        assert!(matches!(
            open_block_device(&lo.dev, Some(bad)),
            Err(BackendError::InvalidConfig(_))
        ));
    }
}
