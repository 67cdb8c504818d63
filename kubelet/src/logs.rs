//! Container logs in the CRI log format, written and read as the kubelet
//! and its runtime do.
//!
//! Each record is one line:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`. `F` marks a
//! complete line, `P` a chunk of a line longer than the maximum line size
//! (16 KiB); the chunks of one long line are `P ... P F`.
//!
//! Files: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`, rotated
//! to `<restart>.log.<YYYYMMDD-HHMMSS>` (UTC) once they would grow beyond
//! the maximum size, keeping at most `max_files` files in total (current
//! included). Rotated files are not gzip-compressed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};

/// `container-log-max-size` default (10Mi).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// `container-log-max-files` default.
pub const DEFAULT_MAX_FILES: usize = 5;
/// The runtime's maximum log line size before splitting into `P` chunks.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

/// The stream a log record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// `<root>/<ns>_<pod>_<uid>/<container>/<restart>.log`.
pub fn log_path(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart: i32,
) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
        .join(format!("{restart}.log"))
}

/// Formats a time like Go's `time.RFC3339Nano` (fraction without trailing
/// zeros, `Z` for UTC).
pub fn format_rfc3339_nano(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{:09}", nanos.min(999_999_999));
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let off = t.offset().local_minus_utc();
    if off == 0 {
        s.push('Z');
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        s.push_str(&format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60));
    }
    s
}

/// Appends CRI-format records to a container's log file, rotating it.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
    max_line: usize,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) `path`, creating parent directories.
    /// `max_size == 0` disables rotation; `max_files` is at least 2.
    pub fn open(path: impl Into<PathBuf>, max_size: u64, max_files: usize) -> io::Result<Self> {
        let path = path.into();
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            max_size,
            max_files: max_files.max(2),
            max_line: DEFAULT_MAX_LINE_SIZE,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Changes the line size above which lines are split (at least 1).
    pub fn with_max_line_size(mut self, n: usize) -> Self {
        self.max_line = n.max(1);
        self
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes output of `stream`, timestamped now.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        self.write_at(stream, data, Utc::now())
    }

    /// Writes output of `stream` with the given timestamp. Complete lines
    /// become `F` records; the unterminated rest is buffered (per stream)
    /// and flushed as `P` chunks whenever it reaches the maximum line size.
    pub fn write_at(&mut self, stream: Stream, data: &[u8], ts: DateTime<Utc>) -> io::Result<()> {
        let idx = stream.index();
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.push_partial(stream, &rest[..nl], ts)?;
                    let line = std::mem::take(&mut self.partial[idx]);
                    self.record(stream, b'F', &line, ts)?;
                    rest = &rest[nl + 1..];
                }
                None => {
                    self.push_partial(stream, rest, ts)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    fn push_partial(
        &mut self,
        stream: Stream,
        mut data: &[u8],
        ts: DateTime<Utc>,
    ) -> io::Result<()> {
        let idx = stream.index();
        while !data.is_empty() {
            let room = self.max_line - self.partial[idx].len();
            let take = room.min(data.len());
            self.partial[idx].extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial[idx].len() >= self.max_line {
                let chunk = std::mem::take(&mut self.partial[idx]);
                self.record(stream, b'P', &chunk, ts)?;
            }
        }
        Ok(())
    }

    /// Writes any buffered unterminated output of `stream` as a complete
    /// (`F`) record, as the runtime does when the stream closes.
    pub fn flush_stream(&mut self, stream: Stream) -> io::Result<()> {
        self.flush_stream_at(stream, Utc::now())
    }

    /// [`LogWriter::flush_stream`] with an explicit timestamp.
    pub fn flush_stream_at(&mut self, stream: Stream, ts: DateTime<Utc>) -> io::Result<()> {
        let idx = stream.index();
        if self.partial[idx].is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.partial[idx]);
        self.record(stream, b'F', &line, ts)
    }

    /// Flushes both streams' pending output and syncs the file.
    pub fn close(mut self) -> io::Result<()> {
        let now = Utc::now();
        self.flush_stream_at(Stream::Stdout, now)?;
        self.flush_stream_at(Stream::Stderr, now)?;
        self.file.flush()
    }

    fn record(
        &mut self,
        stream: Stream,
        tag: u8,
        content: &[u8],
        ts: DateTime<Utc>,
    ) -> io::Result<()> {
        let stamp = format_rfc3339_nano(&ts.fixed_offset());
        let mut buf = Vec::with_capacity(stamp.len() + content.len() + 12);
        buf.extend_from_slice(stamp.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(stream.as_str().as_bytes());
        buf.push(b' ');
        buf.push(tag);
        buf.push(b' ');
        buf.extend_from_slice(content);
        buf.push(b'\n');
        let len = buf.len() as u64;
        if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
            self.rotate_at(ts)?;
        }
        self.file.write_all(&buf)?;
        self.size += len;
        Ok(())
    }

    /// Rotates now.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.rotate_at(Utc::now())
    }

    /// Renames the current file to `<path>.<YYYYMMDD-HHMMSS>` (a `.NNN`
    /// suffix is added if that exists), removes the oldest rotated files so
    /// at most `max_files - 1` remain, and starts a new current file.
    pub fn rotate_at(&mut self, now: DateTime<Utc>) -> io::Result<()> {
        self.file.flush()?;
        let mut rotated = rotated_files(&self.path)?;
        // Keep max_files - 2 old ones: plus the one rotated now and the new
        // current file, that makes max_files.
        let keep = self.max_files.saturating_sub(2);
        if rotated.len() > keep {
            let excess = rotated.len() - keep;
            for old in rotated.drain(..excess) {
                match fs::remove_file(&old) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let base = format!("{}.{}", self.path.display(), now.format("%Y%m%d-%H%M%S"));
        let mut target = PathBuf::from(&base);
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{base}.{n:03}"));
            n += 1;
        }
        fs::rename(&self.path, &target)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Rotated files of `current` (`<current>.*`, excluding `.tmp` and `.gz`),
/// oldest first.
pub fn rotated_files(current: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(dir) = current.parent() else {
        return Ok(Vec::new());
    };
    let Some(name) = current.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let f = e.file_name();
                let f = f.to_str()?;
                (f.starts_with(&prefix) && !f.ends_with(".tmp") && !f.ends_with(".gz"))
                    .then(|| e.path())
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    out.sort();
    Ok(out)
}

/// Options of a log read (`kubectl logs` flags).
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Ignored: the caller handles following.
    pub follow: bool,
    /// Only the last N records (`--tail`); `Some(0)` prints nothing,
    /// negative means all.
    pub tail_lines: Option<i64>,
    /// Only records at or after this time (`--since`/`--since-time`).
    pub since: Option<DateTime<Utc>>,
    /// Prefix each line with its RFC3339Nano timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes (`--limit-bytes`); `<= 0` = no limit.
    pub limit_bytes: Option<i64>,
}

/// One parsed CRI log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: DateTime<FixedOffset>,
    pub stream: Stream,
    pub partial: bool,
    /// Content; ends with `\n` for complete records, never for partial ones.
    pub content: Vec<u8>,
}

/// Parses one CRI log line (with or without its trailing newline).
pub fn parse_cri_line(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let timestamp = DateTime::parse_from_rfc3339(ts).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = parts.next()?;
    let tags = tags.strip_suffix(b"\n").unwrap_or(tags);
    let first_tag = tags.split(|&b| b == b':').next()?;
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let mut content = parts.next().unwrap_or(b"").to_vec();
    if partial {
        if content.last() == Some(&b'\n') {
            content.pop();
        }
    } else if content.last() != Some(&b'\n') {
        content.push(b'\n');
    }
    Some(LogRecord {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Reads a container's logs the way `kubectl logs` shows them: content
/// only (partial records joined), optionally timestamp-prefixed, from the
/// rotated files (oldest first) and then the current one.
///
/// `path` is a log file (`N.log`) or a container log directory, in which
/// case the log of the highest restart count is read.
pub fn read_logs(path: &Path, opts: &LogOptions) -> io::Result<Vec<u8>> {
    let current = if path.is_dir() {
        match latest_log_in(path)? {
            Some(p) => p,
            None => return Ok(Vec::new()),
        }
    } else {
        path.to_path_buf()
    };
    if opts.tail_lines == Some(0) {
        return Ok(Vec::new());
    }
    let mut files = rotated_files(&current)?;
    files.push(current);

    let mut lines: Vec<Vec<u8>> = Vec::new();
    for f in &files {
        let data = match fs::read(f) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        lines.extend(
            data.split_inclusive(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    if let Some(n) = opts.tail_lines.filter(|n| *n > 0) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if lines.len() > n {
            lines.drain(..lines.len() - n);
        }
    }

    let limit = opts
        .limit_bytes
        .filter(|b| *b > 0)
        .map(|b| usize::try_from(b).unwrap_or(usize::MAX));
    let mut out = Vec::new();
    let mut new_line = [true, true];
    for l in &lines {
        let Some(rec) = parse_cri_line(l) else {
            continue;
        };
        if let Some(since) = opts.since {
            if rec.timestamp < since {
                continue;
            }
        }
        let idx = rec.stream.index();
        let mut chunk = Vec::new();
        if opts.timestamps && new_line[idx] {
            chunk.extend_from_slice(format_rfc3339_nano(&rec.timestamp).as_bytes());
            chunk.push(b' ');
        }
        chunk.extend_from_slice(&rec.content);
        new_line[idx] = !rec.partial;
        if let Some(limit) = limit {
            let room = limit - out.len();
            if chunk.len() >= room {
                out.extend_from_slice(&chunk[..room]);
                return Ok(out);
            }
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn latest_log_in(dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut best: Option<(i64, PathBuf)> = None;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if best.as_ref().map(|(b, _)| n > *b).unwrap_or(true) {
            best = Some((n, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn tail_reads_what_was_appended_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        fs::write(&p, "2026-01-01T00:00:00Z stdout F old\n").unwrap();
        let mut t = Tail::new(&p, fs::metadata(&p).unwrap().len());
        assert!(t.next().await.unwrap().is_empty());
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        use std::io::Write;
        f.write_all(b"2026-01-01T00:00:01Z stdout F one\n2026-01-01T00:00:02Z stderr P par")
            .unwrap();
        let got = t.next().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].content, b"one\n");
        f.write_all(b"tial\n").unwrap();
        let got = t.next().await.unwrap();
        assert_eq!(got[0].content, b"partial");
        assert!(got[0].partial);
        // rotated: a new, shorter file
        fs::write(&p, "2026-01-01T00:00:03Z stdout F new\n").unwrap();
        let got = t.next().await.unwrap();
        assert_eq!(got[0].content, b"new\n");
    }

    use super::*;
    use chrono::TimeZone;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kspec-logs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn t(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, nanos).unwrap()
    }

    #[test]
    fn path_layout() {
        assert_eq!(
            log_path(
                Path::new("/var/log/pods"),
                "default",
                "web",
                "u-1",
                "app",
                2
            ),
            PathBuf::from("/var/log/pods/default_web_u-1/app/2.log")
        );
    }

    #[test]
    fn timestamp_format() {
        let ts = Utc.with_ymd_and_hms(2016, 10, 6, 0, 17, 9).unwrap();
        assert_eq!(
            format_rfc3339_nano(&ts.fixed_offset()),
            "2016-10-06T00:17:09Z"
        );
        let ts = ts + chrono::Duration::nanoseconds(669_794_200);
        assert_eq!(
            format_rfc3339_nano(&ts.fixed_offset()),
            "2016-10-06T00:17:09.6697942Z"
        );
        let off = DateTime::parse_from_rfc3339("2016-10-06T02:17:09.5+02:00").unwrap();
        assert_eq!(format_rfc3339_nano(&off), "2016-10-06T02:17:09.5+02:00");
    }

    #[test]
    fn write_format_and_partial_lines() {
        let d = tmpdir("format");
        let p = d.join("0.log");
        let mut w = LogWriter::open(&p, 0, 5).unwrap().with_max_line_size(8);
        w.write_at(Stream::Stdout, b"hello\nwor", t(0, 0)).unwrap();
        w.write_at(Stream::Stderr, b"oops\n", t(1, 500_000_000))
            .unwrap();
        w.write_at(Stream::Stdout, b"ld\n", t(2, 0)).unwrap();
        w.write_at(Stream::Stdout, b"0123456789abcdefXY\n", t(3, 0))
            .unwrap();
        w.write_at(Stream::Stdout, b"\n", t(4, 0)).unwrap();
        w.write_at(Stream::Stderr, b"no newline", t(5, 0)).unwrap();
        w.flush_stream_at(Stream::Stderr, t(6, 0)).unwrap();
        drop(w);
        let text = String::from_utf8(fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            text,
            "2023-11-14T22:13:20Z stdout F hello\n\
             2023-11-14T22:13:21.5Z stderr F oops\n\
             2023-11-14T22:13:22Z stdout F world\n\
             2023-11-14T22:13:23Z stdout P 01234567\n\
             2023-11-14T22:13:23Z stdout P 89abcdef\n\
             2023-11-14T22:13:23Z stdout F XY\n\
             2023-11-14T22:13:24Z stdout F \n\
             2023-11-14T22:13:25Z stderr P no newli\n\
             2023-11-14T22:13:26Z stderr F ne\n"
        );

        let all = read_logs(&p, &LogOptions::default()).unwrap();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "hello\noops\nworld\n0123456789abcdefXY\n\nno newline\n"
        );

        let ts = read_logs(
            &p,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        )
        .unwrap();
        let ts = String::from_utf8(ts).unwrap();
        assert!(ts.starts_with("2023-11-14T22:13:20Z hello\n2023-11-14T22:13:21.5Z oops\n"));
        assert!(ts.contains("2023-11-14T22:13:23Z 0123456789abcdefXY\n"));

        // Reading the directory picks the latest restart.
        fs::write(d.join("1.log"), "2023-11-14T22:13:20Z stdout F restarted\n").unwrap();
        assert_eq!(
            read_logs(&d, &LogOptions::default()).unwrap(),
            b"restarted\n"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tail_since_limit() {
        let d = tmpdir("tail");
        let p = d.join("0.log");
        let mut w = LogWriter::open(&p, 0, 5).unwrap();
        for i in 0..10 {
            w.write_at(Stream::Stdout, format!("line {i}\n").as_bytes(), t(i, 0))
                .unwrap();
        }
        drop(w);
        let read = |o: LogOptions| String::from_utf8(read_logs(&p, &o).unwrap()).unwrap();
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            }),
            "line 8\nline 9\n"
        );
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(0),
                ..Default::default()
            }),
            ""
        );
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(-1),
                ..Default::default()
            })
            .lines()
            .count(),
            10
        );
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(100),
                ..Default::default()
            })
            .lines()
            .count(),
            10
        );
        assert_eq!(
            read(LogOptions {
                since: Some(t(7, 0)),
                ..Default::default()
            }),
            "line 7\nline 8\nline 9\n"
        );
        assert_eq!(
            read(LogOptions {
                limit_bytes: Some(10),
                ..Default::default()
            }),
            "line 0\nlin"
        );
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            }),
            "2023-11-14T22:13:29Z line 9\n"
        );
        // Garbage lines are skipped.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"not a cri line\n").unwrap();
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            }),
            "line 9\n"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation() {
        let d = tmpdir("rotate");
        let p = d.join("0.log");
        // Each record is 36 bytes: "2023-11-14T22:13:20Z stdout F line 0\n"
        let mut w = LogWriter::open(&p, 80, 3).unwrap();
        for i in 0..10 {
            w.write_at(Stream::Stdout, format!("line {i}\n").as_bytes(), t(i, 0))
                .unwrap();
        }
        drop(w);
        let rotated = rotated_files(&p).unwrap();
        // max_files 3 = current + 2 rotated.
        assert_eq!(rotated.len(), 2);
        let names: Vec<String> = rotated
            .iter()
            .map(|r| r.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names[0].starts_with("0.log.20231114-2213"), "{names:?}");
        for f in rotated.iter().chain([&p]) {
            assert!(fs::metadata(f).unwrap().len() <= 80);
        }
        // The newest 6 lines survive, in order, across files.
        let all = String::from_utf8(read_logs(&p, &LogOptions::default()).unwrap()).unwrap();
        assert_eq!(all, "line 4\nline 5\nline 6\nline 7\nline 8\nline 9\n");
        let tail = read_logs(
            &p,
            &LogOptions {
                tail_lines: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(tail, b"line 7\nline 8\nline 9\n");

        // Same-second rotations get ordered suffixes.
        let d2 = tmpdir("rotate-same");
        let p2 = d2.join("0.log");
        let mut w = LogWriter::open(&p2, 40, 5).unwrap();
        for i in 0..4 {
            w.write_at(Stream::Stdout, format!("line {i}\n").as_bytes(), t(0, 0))
                .unwrap();
        }
        drop(w);
        let all = String::from_utf8(read_logs(&p2, &LogOptions::default()).unwrap()).unwrap();
        assert_eq!(all, "line 0\nline 1\nline 2\nline 3\n");
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&d2).unwrap();
    }

    #[test]
    fn parse_lines() {
        let r = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout P part").unwrap();
        assert!(r.partial);
        assert_eq!(r.content, b"part");
        let r = parse_cri_line(b"2016-10-06T00:17:09Z stderr F:x full\n").unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(!r.partial);
        assert_eq!(r.content, b"full\n");
        assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdin F x\n").is_none());
        assert!(parse_cri_line(b"yesterday stdout F x\n").is_none());
    }
}

/// Follows a CRI log file from an offset: the complete records appended
/// since the last look, reading only the new bytes, starting over when the
/// file does (rotation).
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    rest: Vec<u8>,
}

impl Tail {
    pub fn new(path: impl Into<PathBuf>, offset: u64) -> Tail {
        Tail {
            path: path.into(),
            offset,
            rest: Vec::new(),
        }
    }

    /// The records written since the last call (empty: nothing new yet).
    pub async fn next(&mut self) -> io::Result<Vec<LogRecord>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata().await?.len();
        if len < self.offset {
            self.offset = 0;
            self.rest.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        f.seek(io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf).await?;
        self.offset += buf.len() as u64;
        self.rest.extend_from_slice(&buf);
        let complete = self
            .rest
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let records = self.rest[..complete]
            .split_inclusive(|b| *b == b'\n')
            .filter_map(parse_cri_line)
            .collect();
        self.rest.drain(..complete);
        Ok(records)
    }
}
