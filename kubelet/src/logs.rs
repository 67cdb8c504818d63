//! Container logs in the CRI format (placeholder until the full writer lands).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path, _max_size: u64, _max_files: usize) -> std::io::Result<LogWriter> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let i = stream as usize;
        self.partial[i].extend_from_slice(data);
        while let Some(pos) = self.partial[i].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[i].drain(..=pos).collect();
            self.line(stream, "F", &line[..line.len() - 1])?;
        }
        Ok(())
    }

    pub fn flush(&mut self, stream: Stream) -> std::io::Result<()> {
        let i = stream as usize;
        if !self.partial[i].is_empty() {
            let line = std::mem::take(&mut self.partial[i]);
            self.line(stream, "P", &line)?;
        }
        Ok(())
    }

    fn line(&mut self, stream: Stream, tag: &str, content: &[u8]) -> std::io::Result<()> {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut buf = Vec::with_capacity(content.len() + 48);
        buf.extend_from_slice(format!("{ts} {} {tag} ", stream.as_str()).as_bytes());
        buf.extend_from_slice(content);
        buf.push(b'\n');
        self.file.write_all(&buf)
    }
}
