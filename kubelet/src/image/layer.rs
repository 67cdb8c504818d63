//! Unpacking layer tarballs into directories usable as overlayfs lower layers.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::ImageError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks the layer blob at `blob` into the existing empty directory `dest`. The
/// compression is sniffed (gzip or none; zstd is refused). When `diff_id` is given the
/// uncompressed stream must hash to it.
pub(crate) fn unpack_layer_blob(
    blob: &Path,
    media_type: &str,
    diff_id: Option<&str>,
    dest: &Path,
) -> Result<(), ImageError> {
    let name = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if media_type.contains("zstd") {
        return Err(zstd_error(&name, media_type));
    }
    let file = fs::File::open(blob).map_err(|e| ImageError::io(blob, e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(|e| ImageError::io(blob, e))?;
    let decompressed: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(zstd_error(&name, media_type));
    } else if media_type.ends_with("gzip") {
        return Err(ImageError::Invalid(format!(
            "layer sha256:{name} has media type {media_type} but is not gzip data"
        )));
    } else {
        Box::new(reader)
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    unpack_tar(&mut hashing, dest).map_err(|e| match e {
        ImageError::Invalid(m) => ImageError::Invalid(format!("layer sha256:{name}: {m}")),
        other => other,
    })?;
    // the tar reader may stop before the end-of-archive padding
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ImageError::Invalid(format!("reading layer sha256:{name}: {e}")))?;
    if let Some(want) = diff_id {
        let got = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if got != want {
            return Err(ImageError::Invalid(format!(
                "layer sha256:{name} unpacks to {got}, but the image config says {want}"
            )));
        }
    }
    Ok(())
}

fn zstd_error(name: &str, media_type: &str) -> ImageError {
    ImageError::Invalid(format!(
        "layer sha256:{name} is zstd-compressed ({media_type}), which is not supported"
    ))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Extracts an (uncompressed) layer tar stream into `root`, converting OCI whiteouts to
/// overlayfs ones: `.wh.NAME` becomes a 0/0 character device `NAME`, and `.wh..wh..opq`
/// sets `trusted.overlay.opaque=y` on its directory. Modes, ownership, symlinks, hard links
/// (inside the layer), devices, fifos and `SCHILY.xattr.*` attributes are kept. Entries
/// with `..` or absolute paths, and paths leading out of `root` through symlinks, are
/// refused.
pub fn unpack_tar<R: Read>(reader: R, root: &Path) -> Result<(), ImageError> {
    let root = fs::canonicalize(root).map_err(|e| ImageError::io(root, e))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::Invalid(format!("reading tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Invalid(format!("reading tar: {e}")))?;
        unpack_entry(&mut entry, &root)?;
    }
    Ok(())
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, root: &Path) -> Result<(), ImageError> {
    let raw_path = entry.path_bytes().into_owned();
    let comps = sanitize(&raw_path)?;
    let header = entry.header();
    let kind = header.entry_type();
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let mtime = header.mtime().ok();
    let device = (
        header.device_major().ok().flatten().unwrap_or(0),
        header.device_minor().ok().flatten().unwrap_or(0),
    );
    let link = entry.link_name_bytes().map(|l| l.into_owned());

    if matches!(
        kind,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    ) {
        return Ok(());
    }

    let Some((name, parents)) = comps.split_last() else {
        // "./": the layer root itself
        if kind.is_dir() {
            set_owner_mode(root, uid, gid, mode)?;
        }
        return Ok(());
    };
    let dir = ensure_dirs(root, parents)?;

    // Whiteouts.
    let name_bytes = name.as_bytes();
    if name_bytes == OPAQUE_MARKER {
        if let Err(e) = xattr::set(&dir, OPAQUE_XATTR, b"y") {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot mark directory opaque");
        }
        return Ok(());
    }
    if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(ImageError::Invalid(format!(
                "bad whiteout entry {:?}",
                String::from_utf8_lossy(&raw_path)
            )));
        }
        let target = dir.join(OsStr::from_bytes(hidden));
        remove_existing(&target, false)?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| ImageError::io(&target, e.into()))?;
        chown(&target, uid, gid)?;
        return Ok(());
    }

    let xattrs = pax_xattrs(entry);
    let dst = dir.join(name);
    match kind {
        EntryType::Directory => {
            remove_existing(&dst, true)?;
            match fs::create_dir(&dst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ImageError::io(&dst, e)),
            }
            set_owner_mode(&dst, uid, gid, mode)?;
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            remove_existing(&dst, false)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dst)
                .map_err(|e| ImageError::io(&dst, e))?;
            copy_content(entry, &mut file, &dst)?;
            if let Some(t) = mtime {
                // best effort, like the timestamps of directories we do not keep at all
                let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(t));
            }
            match std::os::unix::fs::fchown(&file, Some(uid), Some(gid)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::debug!(path = %dst.display(), "cannot chown (not root?)");
                }
                Err(e) => return Err(ImageError::io(&dst, e)),
            }
            // after the chown, which clears set-id bits
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| ImageError::io(&dst, e))?;
        }
        EntryType::Symlink => {
            let Some(target) = link else {
                return Err(ImageError::Invalid(format!(
                    "symlink {:?} without a target",
                    String::from_utf8_lossy(&raw_path)
                )));
            };
            remove_existing(&dst, false)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dst)
                .map_err(|e| ImageError::io(&dst, e))?;
            chown(&dst, uid, gid)?;
        }
        EntryType::Link => {
            let Some(target) = link else {
                return Err(ImageError::Invalid(format!(
                    "hard link {:?} without a target",
                    String::from_utf8_lossy(&raw_path)
                )));
            };
            let tcomps = sanitize(&target)?;
            let Some((tname, tparents)) = tcomps.split_last() else {
                return Err(ImageError::Invalid(format!(
                    "hard link {:?} to the layer root",
                    String::from_utf8_lossy(&raw_path)
                )));
            };
            let src = ensure_dirs(root, tparents)?.join(tname);
            if src == dst {
                return Ok(());
            }
            if let Err(e) = fs::symlink_metadata(&src) {
                return Err(ImageError::Invalid(format!(
                    "hard link {:?} to {:?}, which is not in the layer: {e}",
                    String::from_utf8_lossy(&raw_path),
                    String::from_utf8_lossy(&target)
                )));
            }
            remove_existing(&dst, false)?;
            fs::hard_link(&src, &dst).map_err(|e| ImageError::io(&dst, e))?;
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            remove_existing(&dst, false)?;
            let flag = match kind {
                EntryType::Char => SFlag::S_IFCHR,
                EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            mknod(
                &dst,
                flag,
                Mode::from_bits_truncate(mode),
                makedev(device.0 as u64, device.1 as u64),
            )
            .map_err(|e| ImageError::io(&dst, e.into()))?;
            set_owner_mode(&dst, uid, gid, mode)?;
        }
        other => {
            tracing::debug!(path = %String::from_utf8_lossy(&raw_path), kind = ?other, "skipping tar entry");
            return Ok(());
        }
    }
    for (key, value) in xattrs {
        if let Err(e) = xattr::set(&dst, &key, &value) {
            tracing::debug!(path = %dst.display(), key, error = %e, "cannot set xattr");
        }
    }
    Ok(())
}

/// Splits an entry path into normal components; `.` and empty ones are dropped.
fn sanitize(raw: &[u8]) -> Result<Vec<OsString>, ImageError> {
    if raw.starts_with(b"/") {
        return Err(ImageError::Invalid(format!(
            "tar entry {:?} has an absolute path",
            String::from_utf8_lossy(raw)
        )));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(ImageError::Invalid(format!(
                    "tar entry {:?} escapes the layer directory",
                    String::from_utf8_lossy(raw)
                )))
            }
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// Creates (0755) the directories `parents` below `root` and returns the resulting path.
/// A symlink on the way is followed only when it resolves to a directory inside `root`;
/// a non-directory on the way is replaced by a directory.
fn ensure_dirs(root: &Path, parents: &[OsString]) -> Result<PathBuf, ImageError> {
    let mut cur = root.to_path_buf();
    for c in parents {
        let next = cur.join(c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.is_dir() => cur = next,
            Ok(m) if m.file_type().is_symlink() => {
                let real = fs::canonicalize(&next).map_err(|e| {
                    ImageError::Invalid(format!(
                        "path {} goes through a dangling symlink: {e}",
                        next.display()
                    ))
                })?;
                if !real.starts_with(root) || !real.is_dir() {
                    return Err(ImageError::Invalid(format!(
                        "path {} leads out of the layer through a symlink",
                        next.display()
                    )));
                }
                cur = real;
            }
            Ok(_) => {
                fs::remove_file(&next).map_err(|e| ImageError::io(&next, e))?;
                make_dir(&next)?;
                cur = next;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_dir(&next)?;
                cur = next;
            }
            Err(e) => return Err(ImageError::io(&next, e)),
        }
    }
    Ok(cur)
}

fn make_dir(p: &Path) -> Result<(), ImageError> {
    match fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ImageError::io(p, e)),
    }
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(|e| ImageError::io(p, e))
}

/// Removes what is at `p` (never following a symlink); a directory is kept when `keep_dir`.
fn remove_existing(p: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(p).map_err(|e| ImageError::io(p, e))?;
            }
            Ok(())
        }
        Ok(_) => fs::remove_file(p).map_err(|e| ImageError::io(p, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io(p, e)),
    }
}

/// lchown; EPERM (not root) is only logged.
fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), ImageError> {
    match std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %p.display(), "cannot chown (not root?)");
            Ok(())
        }
        Err(e) => Err(ImageError::io(p, e)),
    }
}

fn set_owner_mode(p: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), ImageError> {
    chown(p, uid, gid)?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| ImageError::io(p, e))
}

fn copy_content<R: Read>(src: &mut R, file: &mut fs::File, dst: &Path) -> Result<(), ImageError> {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::Invalid(format!(
                    "reading {} from tar: {e}",
                    dst.display()
                )))
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| ImageError::io(dst, e))?;
    }
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// True when `p` is an overlayfs whiteout (a 0/0 character device).
pub fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(4321);
        h.set_mtime(1_000_000);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        h.set_mode(mode);
        b.append_data(&mut h, path, io::empty()).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// An entry with a raw name, bypassing the builder's own path checks.
    fn raw(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, linkname: &str) {
        let mut h = tar::Header::new_old();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..linkname.len()].copy_from_slice(linkname.as_bytes());
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    #[test]
    fn whiteouts_modes_links() {
        if !is_root() {
            eprintln!("skipping: needs root for mknod");
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        dir(&mut b, "./", 0o755);
        dir(&mut b, "etc/", 0o755);
        file(&mut b, "etc/hosts", b"127.0.0.1 localhost\n", 0o644);
        file(&mut b, "etc/.wh.passwd", b"", 0o644);
        file(&mut b, ".wh.removed-dir", b"", 0o644);
        dir(&mut b, "var/", 0o700);
        file(&mut b, "var/keep", b"k", 0o600);
        file(&mut b, "var/.wh..wh..opq", b"", 0o644);
        file(&mut b, "bin/busybox", b"#!fake", 0o4755);
        link(&mut b, EntryType::Symlink, "bin/sh", "busybox");
        link(&mut b, EntryType::Symlink, "bin/abs", "/bin/busybox");
        link(&mut b, EntryType::Link, "bin/ls", "bin/busybox");
        file(&mut b, "deep/er/file", b"implicit parents", 0o640);
        let data = b.into_inner().unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        unpack_tar(&data[..], root).unwrap();

        assert_eq!(
            fs::read(root.join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        let m = fs::metadata(root.join("etc/hosts")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        assert_eq!(m.mtime(), 1_000_000);
        assert!(is_whiteout(&root.join("etc/passwd")));
        assert!(is_whiteout(&root.join("removed-dir")));
        assert!(!root.join("etc/.wh.passwd").exists());
        assert!(fs::symlink_metadata(root.join("var/.wh..wh..opq")).is_err());
        assert_eq!(fs::read(root.join("var/keep")).unwrap(), b"k");
        assert_eq!(
            fs::metadata(root.join("var")).unwrap().mode() & 0o7777,
            0o700
        );
        match xattr::get(root.join("var"), OPAQUE_XATTR) {
            Ok(v) => assert_eq!(v.as_deref(), Some(&b"y"[..])),
            Err(e) => eprintln!("filesystem without trusted xattrs: {e}"),
        }
        let bb = fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(bb.mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(root.join("bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        let ls = fs::metadata(root.join("bin/ls")).unwrap();
        assert_eq!(ls.ino(), bb.ino());
        assert_eq!(
            fs::read(root.join("deep/er/file")).unwrap(),
            b"implicit parents"
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a", b"one", 0o644);
        file(&mut b, "a", b"two", 0o644);
        link(&mut b, EntryType::Symlink, "l", "a");
        file(&mut b, "l", b"not through the link", 0o644);
        let data = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        unpack_tar(&data[..], tmp.path()).unwrap();
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"two");
        assert_eq!(
            fs::read(tmp.path().join("l")).unwrap(),
            b"not through the link"
        );
        assert!(!fs::symlink_metadata(tmp.path().join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn refuses_escaping_entries() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        type Case<'a> = Box<dyn Fn(&mut tar::Builder<Vec<u8>>) + 'a>;
        let cases: Vec<Case> = vec![
            Box::new(|b| raw(b, EntryType::Regular, "../evil", "")),
            Box::new(|b| raw(b, EntryType::Regular, "a/../../evil", "")),
            Box::new(|b| raw(b, EntryType::Regular, "/evil", "")),
            Box::new(|b| raw(b, EntryType::Link, "evil", "../outside")),
            Box::new(|b| raw(b, EntryType::Link, "evil", "/etc/passwd")),
            Box::new(|b| raw(b, EntryType::Regular, "../.wh.evil", "")),
            Box::new(|b| {
                link(b, EntryType::Symlink, "up", &target);
                file(b, "up/evil", b"x", 0o644);
            }),
            Box::new(|b| {
                link(b, EntryType::Symlink, "up", "..");
                file(b, "up/evil", b"x", 0o644);
            }),
            Box::new(|b| {
                link(b, EntryType::Symlink, "up", &target);
                dir(b, "up/evildir/", 0o755);
            }),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut b = tar::Builder::new(Vec::new());
            case(&mut b);
            let data = b.into_inner().unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            fs::create_dir(&root).unwrap();
            let err = unpack_tar(&data[..], &root).expect_err(&format!("case {i} must fail"));
            assert!(matches!(err, ImageError::Invalid(_)), "case {i}: {err}");
            assert!(!tmp.path().join("evil").exists(), "case {i}");
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "case {i}");
        }
        // symlinks that stay inside the layer are fine to go through
        let mut b = tar::Builder::new(Vec::new());
        dir(&mut b, "usr/lib/", 0o755);
        link(&mut b, EntryType::Symlink, "lib", "usr/lib");
        file(&mut b, "lib/libc.so", b"elf", 0o755);
        let data = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        unpack_tar(&data[..], tmp.path()).unwrap();
        assert_eq!(
            fs::read(tmp.path().join("usr/lib/libc.so")).unwrap(),
            b"elf"
        );
    }

    #[test]
    fn layer_blob_gzip_digest_and_zstd() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "hello", b"world", 0o644);
        let tar_bytes = b.into_inner().unwrap();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        let gz = gz.finish().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blob");
        fs::write(&blob, &gz).unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack_layer_blob(
            &blob,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Some(&diff_id),
            &out,
        )
        .unwrap();
        assert_eq!(fs::read(out.join("hello")).unwrap(), b"world");
        // plain tar under a docker media type name, wrong diff id
        fs::write(&blob, &tar_bytes).unwrap();
        let out2 = tmp.path().join("out2");
        fs::create_dir(&out2).unwrap();
        let bad = format!("sha256:{}", "0".repeat(64));
        let err = unpack_layer_blob(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            Some(&bad),
            &out2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unpacks to"), "{err}");
        let err = unpack_layer_blob(
            &blob,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            None,
            &out2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        fs::write(&blob, [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0]).unwrap();
        let err = unpack_layer_blob(&blob, "application/octet-stream", None, &out2).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        let err = unpack_layer_blob(
            &blob,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            None,
            &out2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
