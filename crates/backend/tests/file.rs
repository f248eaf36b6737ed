//! File backend tests, on real files in temporary directories.
//!
//! Filesystems on the development machine: `/tmp` (ext4) accepts `O_DIRECT`;
//! `/dev/shm` is tmpfs, which accepts `O_DIRECT` since Linux 6.6 but refuses
//! it on older kernels; ramfs always refuses it (`EINVAL`), so the Auto
//! fallback is tested on a private ramfs mount when we are allowed to mount.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{pattern, split};
use nvmf_backend::{
    open_file, AlignedBuf, Backend, BackendError, DirectIo, FileBackend, DIRECT_IO_ALIGN,
};

const MIB: u64 = 1 << 20;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/tmp").unwrap()
}

/// Whether `dir` is on tmpfs (where file namespaces are served inline).
fn on_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as u64 == 0x0102_1994)
}

/// A temporary directory on tmpfs (`/dev/shm`), or `None` (and a SKIP line)
/// where `/dev/shm` is something else.
fn shm_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if !on_tmpfs(shm) {
        eprintln!("SKIP: /dev/shm is not tmpfs here");
        return None;
    }
    Some(tempfile::tempdir_in(shm).unwrap())
}

fn read_vec(b: &dyn Backend, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xEEu8; len];
    b.read_at(off, &mut v).unwrap();
    v
}

/// Unaligned-by-construction buffer: a Vec sliced at +1 then trimmed, so
/// the start address is never 4096-aligned.
fn unaligned_copy(data: &[u8]) -> (Vec<u8>, usize) {
    let mut v = vec![0u8; data.len() + DIRECT_IO_ALIGN + 1];
    let addr = v.as_ptr() as usize;
    let start = ((DIRECT_IO_ALIGN - addr % DIRECT_IO_ALIGN) % DIRECT_IO_ALIGN) + 8;
    v[start..start + data.len()].copy_from_slice(data);
    (v, start)
}

fn exercise_round_trips(b: &dyn Backend) {
    let bs = b.info().block_size as u64;
    let cap = b.info().capacity_bytes();
    let cases: &[(u64, usize)] = &[
        (0, bs as usize),
        (bs, 8 * bs as usize),
        (MIB - bs, 2 * bs as usize),
        (MIB, (3 * MIB + bs) as usize), // larger than the bounce buffer
        (cap - bs, bs as usize),
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        let data = pattern(100 + i as u64, len);
        // 1. single unaligned chunk
        let (v, s) = unaligned_copy(&data);
        b.write_at(off, &[&v[s..s + len]], false).unwrap();
        assert_eq!(read_vec(b, off, len), data, "case {i} single");
        // 2. odd scatter-gather chunks, FUA
        let data2 = pattern(200 + i as u64, len);
        b.write_at(off, &split(&data2, &[3, 509, 4096, 1000]), true)
            .unwrap();
        let mut back = vec![0u8; len];
        let (mut rv, rs) = unaligned_copy(&back);
        b.read_at(off, &mut rv[rs..rs + len]).unwrap();
        back.copy_from_slice(&rv[rs..rs + len]);
        assert_eq!(back, data2, "case {i} split/unaligned read");
        // 3. aligned buffer, block-multiple chunks (zero-copy O_DIRECT path)
        let mut ab = AlignedBuf::zeroed(len);
        ab.copy_from_slice(&pattern(300 + i as u64, len));
        let chunks: Vec<&[u8]> = ab.chunks(bs as usize * 2).collect();
        b.write_at(off, &chunks, false).unwrap();
        let mut rb = AlignedBuf::zeroed(len);
        b.read_at(off, &mut rb).unwrap();
        assert_eq!(
            &rb[..],
            &pattern(300 + i as u64, len)[..],
            "case {i} aligned"
        );
    }
    b.flush().unwrap();
}

#[test]
fn round_trip_buffered() {
    let dir = tmpdir();
    let b = open_file(&dir.path().join("ns"), Some(16 * MIB), 512, DirectIo::Off).unwrap();
    let info = b.info();
    assert_eq!(info.num_blocks, 16 * MIB / 512);
    assert!(!info.volatile && info.supports_discard);
    assert_eq!(info.may_block, !on_tmpfs(dir.path()));
    assert!(
        info.description.contains("buffered"),
        "{}",
        info.description
    );
    exercise_round_trips(&*b);
}

#[test]
fn round_trip_direct_on_disk() {
    let dir = tmpdir();
    let fb = FileBackend::open(&dir.path().join("ns"), Some(16 * MIB), 512, DirectIo::On).unwrap();
    assert!(fb.is_direct(), "/tmp (ext4) should accept O_DIRECT");
    assert!(fb.info().description.contains("O_DIRECT"));
    exercise_round_trips(&fb);
}

#[test]
fn round_trip_direct_4k_blocks() {
    let dir = tmpdir();
    let fb = FileBackend::open(&dir.path().join("ns"), Some(16 * MIB), 4096, DirectIo::On).unwrap();
    assert_eq!(fb.info().num_blocks, 4096);
    exercise_round_trips(&fb);
}

#[test]
fn many_iovecs() {
    // More chunks than IOV_MAX (1024) in one write, both modes.
    let dir = tmpdir();
    for (i, mode) in [DirectIo::Off, DirectIo::On].into_iter().enumerate() {
        let b = open_file(
            &dir.path().join(format!("ns{i}")),
            Some(16 * MIB),
            512,
            mode,
        )
        .unwrap();
        let data = pattern(i as u64, 2500 * 512);
        b.write_at(0, &split(&data, &[512]), false).unwrap();
        assert_eq!(read_vec(&*b, 0, data.len()), data);
        let mut ab = AlignedBuf::zeroed(1100 * 4096);
        ab.copy_from_slice(&pattern(9, 1100 * 4096));
        let chunks: Vec<&[u8]> = ab.chunks(4096).collect();
        b.write_at(4 * MIB, &chunks, true).unwrap();
        assert_eq!(read_vec(&*b, 4 * MIB, ab.len()), &ab[..]);
    }
}

#[test]
fn new_file_is_sparse_and_reads_zero() {
    let dir = tmpdir();
    let path = dir.path().join("ns");
    let b = open_file(&path, Some(64 * MIB), 512, DirectIo::Auto).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 64 * MIB);
    assert_eq!(meta.blocks(), 0, "set_len must not allocate");
    assert!(read_vec(&*b, 0, MIB as usize).iter().all(|&x| x == 0));
    assert!(read_vec(&*b, 63 * MIB, MIB as usize)
        .iter()
        .all(|&x| x == 0));
}

#[test]
fn discard_punches_holes() {
    let dir = tmpdir();
    let path = dir.path().join("ns");
    for mode in [DirectIo::Off, DirectIo::On] {
        let b = open_file(&path, Some(8 * MIB), 512, mode).unwrap();
        let data = pattern(5, 4 * MIB as usize);
        b.write_at(0, &[&data], false).unwrap();
        b.flush().unwrap();
        let before = std::fs::metadata(&path).unwrap().blocks();
        assert!(
            before >= 4 * MIB / 512,
            "st_blocks {before} after 4 MiB write"
        );

        b.discard(MIB, 2 * MIB).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.len(), 8 * MIB, "KEEP_SIZE");
        assert!(
            after.blocks() + 2 * MIB / 512 <= before,
            "st_blocks {} -> {} did not shrink by 2 MiB",
            before,
            after.blocks()
        );
        let mut expect = data.clone();
        expect[MIB as usize..3 * MIB as usize].fill(0);
        assert_eq!(read_vec(&*b, 0, 4 * MIB as usize), expect);

        // Unaligned-to-fs-block (512 B granularity) discard still reads zero.
        b.discard(512, 1024).unwrap();
        expect[512..1536].fill(0);
        assert_eq!(read_vec(&*b, 0, 4 * MIB as usize), expect);
        b.discard(0, 8 * MIB).unwrap();
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn write_zeroes_zeroes() {
    let dir = tmpdir();
    for (i, mode) in [DirectIo::Off, DirectIo::On].into_iter().enumerate() {
        let b = open_file(&dir.path().join(format!("ns{i}")), Some(4 * MIB), 512, mode).unwrap();
        let data = pattern(11, 4 * MIB as usize);
        b.write_at(0, &[&data], false).unwrap();
        b.write_zeroes(512, 3 * MIB).unwrap();
        b.write_zeroes(4 * MIB - 512, 512).unwrap();
        let mut expect = data;
        expect[512..(3 * MIB + 512) as usize].fill(0);
        expect[(4 * MIB - 512) as usize..].fill(0);
        assert_eq!(read_vec(&*b, 0, 4 * MIB as usize), expect);
    }
}

#[test]
fn fua_and_flush_persist_across_reopen() {
    let dir = tmpdir();
    let path = dir.path().join("ns");
    let data = pattern(77, 64 * 1024);
    {
        let b = open_file(&path, Some(MIB), 4096, DirectIo::Auto).unwrap();
        b.write_at(8192, &split(&data, &[1000, 24]), true).unwrap();
        b.write_at(MIB - 4096, &[&data[..4096]], false).unwrap();
        b.flush().unwrap();
    }
    // Reopen with size None: capacity is the existing file length.
    let b = open_file(&path, None, 4096, DirectIo::Off).unwrap();
    assert_eq!(b.info().num_blocks, MIB / 4096);
    assert_eq!(read_vec(&*b, 8192, data.len()), data);
    assert_eq!(read_vec(&*b, MIB - 4096, 4096), &data[..4096]);
    // The file content is visible to ordinary reads too.
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[8192..8192 + data.len()], &data[..]);
}

#[test]
fn sizing_rules() {
    let dir = tmpdir();
    let p = |n: &str| dir.path().join(n);

    // Missing file without size: ENOENT.
    match open_file(&p("missing"), None, 512, DirectIo::Auto) {
        Err(BackendError::Io { error: source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("unexpected {other:?}"),
    }
    // Empty file without size: rejected.
    std::fs::write(p("empty"), b"").unwrap();
    assert!(matches!(
        open_file(&p("empty"), None, 512, DirectIo::Auto),
        Err(BackendError::InvalidConfig(_))
    ));
    // Existing length rounds down to whole blocks.
    std::fs::write(p("odd"), vec![1u8; 10_000]).unwrap();
    let b = open_file(&p("odd"), None, 4096, DirectIo::Off).unwrap();
    assert_eq!(b.info().num_blocks, 2);
    let b = open_file(&p("odd"), None, 512, DirectIo::Off).unwrap();
    assert_eq!(b.info().num_blocks, 19);
    drop(b);
    // Size given and larger: extended.
    let b = open_file(&p("odd"), Some(MIB), 512, DirectIo::Off).unwrap();
    assert_eq!(std::fs::metadata(p("odd")).unwrap().len(), MIB);
    assert_eq!(b.info().num_blocks, MIB / 512);
    assert_eq!(read_vec(&*b, 0, 512), vec![1u8; 512]);
    drop(b);
    // Size given and smaller: capacity is the size, file is not truncated.
    let b = open_file(&p("odd"), Some(6000), 512, DirectIo::Off).unwrap();
    assert_eq!(b.info().num_blocks, 11);
    assert_eq!(std::fs::metadata(p("odd")).unwrap().len(), MIB);
    // Bad parameters.
    assert!(matches!(
        open_file(&p("x"), Some(MIB), 1000, DirectIo::Off),
        Err(BackendError::InvalidConfig(_))
    ));
    assert!(matches!(
        open_file(&p("x"), Some(100), 512, DirectIo::Off),
        Err(BackendError::InvalidConfig(_))
    ));
    // Not a regular file.
    assert!(open_file(dir.path(), None, 512, DirectIo::Off).is_err());
    assert!(matches!(
        open_file(Path::new("/dev/null"), None, 512, DirectIo::Off),
        Err(BackendError::InvalidConfig(_))
    ));
}

#[test]
fn out_of_range() {
    let dir = tmpdir();
    let b = open_file(&dir.path().join("ns"), Some(MIB), 512, DirectIo::Auto).unwrap();
    let mut buf = vec![0u8; 1024];
    let oor = |r: Result<(), BackendError>| matches!(r, Err(BackendError::OutOfRange { .. }));
    assert!(oor(b.read_at(MIB - 512, &mut buf)));
    assert!(oor(b.write_at(MIB, &[&buf[..512]], true)));
    assert!(oor(b.write_at(u64::MAX - 511, &[&buf], false)));
    assert!(oor(b.discard(MIB - 512, 1024)));
    assert!(oor(b.discard(1024, u64::MAX - 512)));
    assert!(oor(b.write_zeroes(MIB, 512)));
    assert!(matches!(
        b.write_zeroes(0, 100),
        Err(BackendError::Misaligned { .. })
    ));
    // The file was not extended by the rejected requests.
    assert_eq!(std::fs::metadata(dir.path().join("ns")).unwrap().len(), MIB);
}

#[test]
fn concurrent_file_io() {
    let dir = tmpdir();
    let b = open_file(&dir.path().join("ns"), Some(8 * MIB), 512, DirectIo::On).unwrap();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                for r in 0..32u64 {
                    let off = t * 2 * MIB + r * 16384;
                    let data = pattern(t * 100 + r, 16384);
                    b.write_at(off, &split(&data, &[700]), r % 4 == 0).unwrap();
                    assert_eq!(read_vec(&*b, off, data.len()), data);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A private ramfs mount (ramfs refuses O_DIRECT with EINVAL); unmounted on
/// drop. `None` if mounting is not permitted here.
struct Ramfs {
    dir: tempfile::TempDir,
}

impl Ramfs {
    fn mount() -> Option<Ramfs> {
        let dir = tempfile::tempdir_in("/tmp").ok()?;
        let out = Command::new("mount")
            .args(["-t", "ramfs", "nvmf-backend-test"])
            .arg(dir.path())
            .output()
            .ok()?;
        out.status.success().then_some(Ramfs { dir })
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn direct_auto_falls_back_when_refused() {
    let Some(ramfs) = Ramfs::mount() else {
        eprintln!("skipping ramfs part: cannot mount ramfs (not root?)");
        return;
    };
    let path = ramfs.dir.path().join("ns");
    // On: refused.
    match FileBackend::open(&path, Some(MIB), 512, DirectIo::On) {
        Err(BackendError::Io { error: source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL))
        }
        other => panic!("O_DIRECT On on ramfs should fail, got {other:?}"),
    }
    // Auto: falls back to buffered and works.
    let fb = FileBackend::open(&path, Some(MIB), 512, DirectIo::Auto).unwrap();
    assert!(!fb.is_direct());
    assert!(fb.info().description.contains("buffered"));
    let data = pattern(1, 8192);
    fb.write_at(4096, &[&data], true).unwrap();
    assert_eq!(read_vec(&fb, 4096, 8192), data);
    // ramfs has no fallocate at all: discard/write_zeroes fall back to writes.
    fb.discard(4096, 4096).unwrap();
    fb.write_zeroes(8192, 4096).unwrap();
    assert!(read_vec(&fb, 0, MIB as usize).iter().all(|&x| x == 0));
    drop(fb);
}

#[test]
fn direct_auto_on_tmpfs() {
    // tmpfs: O_DIRECT accepted on Linux >= 6.6, refused before; Auto must
    // work either way.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let fb = FileBackend::open(&dir.path().join("ns"), Some(8 * MIB), 512, DirectIo::Auto).unwrap();
    eprintln!("tmpfs: {}", fb.info().description);
    exercise_round_trips(&fb);
    fb.discard(0, 8 * MIB).unwrap();
    assert!(read_vec(&fb, 0, 8 * MIB as usize).iter().all(|&x| x == 0));
}

/// A file on tmpfs is memory: served inline (not a blocking call), and with
/// `direct=auto` buffered, since O_DIRECT would bypass nothing there; an
/// explicit `direct=on` is kept. Data round-trips either way.
#[test]
fn a_file_on_tmpfs_is_served_inline() {
    let Some(dir) = shm_dir() else {
        return;
    };
    for (mode, want) in [(DirectIo::Auto, "buffered"), (DirectIo::On, "O_DIRECT")] {
        let b = open_file(&dir.path().join(format!("{mode:?}")), Some(MIB), 4096, mode).unwrap();
        let info = b.info();
        assert!(!info.may_block, "{mode:?}: {}", info.description);
        assert!(
            info.description.contains(want),
            "{mode:?}: {}",
            info.description
        );
        assert!(
            info.description.contains("in memory"),
            "{}",
            info.description
        );
        let data: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
        let (buf, off) = unaligned_copy(&data);
        b.write_at(4096, &[&buf[off..off + data.len()]], true)
            .unwrap();
        assert_eq!(read_vec(&*b, 4096, 8192), data);
    }
}

/// tmpfs has no `FALLOC_FL_ZERO_RANGE`: Write Zeroes punches a hole instead
/// (the blocks read as zeroes and their memory is freed; NVM Command Set 1.0
/// §3.3.8 lets a controller deallocate on Write Zeroes), not writing up to
/// 256 MiB of zeroes on the queue's own thread, where a tmpfs namespace is
/// served.
#[test]
fn write_zeroes_on_tmpfs_frees_the_range() {
    let Some(dir) = shm_dir() else {
        return;
    };
    let path = dir.path().join("ns");
    let b = open_file(&path, Some(64 * MIB), 4096, DirectIo::Auto).unwrap();
    let data = pattern(5, 64 * MIB as usize);
    b.write_at(0, &[&data], false).unwrap();
    let before = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        before >= 64 * MIB,
        "written in full: {before} bytes allocated"
    );
    b.write_zeroes(4096, 48 * MIB).unwrap();
    let after = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        after <= 17 * MIB,
        "48 MiB zeroed of 64: {after} bytes still allocated"
    );
    let mut expect = data;
    expect[4096..(48 * MIB + 4096) as usize].fill(0);
    assert_eq!(read_vec(&*b, 0, 64 * MIB as usize), expect);
}
