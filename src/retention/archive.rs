//! The archive: purged sagas as JSON lines in gzip files, one file per hour and instance
//! (`archive_dir/YYYY/MM/DD/HH-instance.jsonl.gz`).
//!
//! Each batch is appended as one gzip member and synced before its sagas are deleted: a crash
//! may archive a saga twice, never lose it, and `zcat` reads a file being written up to its last
//! complete member (gzip allows members one after another).

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends batches of lines to the archive under one directory.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
    /// The instance's id as it appears in file names.
    instance: String,
}

impl Archive {
    /// An archive under `dir`, written by `instance`.
    pub fn new(dir: &str, instance: &str) -> Self {
        let instance = instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Archive {
            dir: PathBuf::from(dir),
            instance,
        }
    }

    /// The file of the hour of `at_ms` (UTC), relative to the archive's directory.
    pub fn file_for(&self, at_ms: i64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
        format!("{}-{}.jsonl.gz", t.format("%Y/%m/%d/%H"), self.instance)
    }

    /// Appends `lines` (each one JSON document, without its newline) as one gzip member to the
    /// file of `at_ms`'s hour and syncs it to disk. Answers the file (relative) and the bytes
    /// written. Blocking: run it off the async threads.
    pub fn append(&self, at_ms: i64, lines: &[String]) -> std::io::Result<(String, u64)> {
        let rel = self.file_for(at_ms);
        let path = self.dir.join(&rel);
        let parent = path.parent().unwrap_or(Path::new("."));
        let new_dir = !parent.exists();
        std::fs::create_dir_all(parent)?;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        for line in lines {
            gz.write_all(line.as_bytes())?;
            gz.write_all(b"\n")?;
        }
        let member = gz.finish()?;
        let existed = path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(&member)?;
        f.sync_all()?;
        if !existed || new_dir {
            // The new file's name must be durable too, not only its bytes.
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok((rel, member.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    #[test]
    fn batches_append_as_members_that_read_back_as_one_stream() {
        let dir = std::env::temp_dir().join(format!("archive-test-{}", std::process::id()));
        let a = Archive::new(dir.to_str().unwrap(), "host#1.2");
        let at = 1_786_000_000_000; // 2026-08-06 07:06 UTC
        let (rel, n1) = a.append(at, &["{\"id\":\"a\"}".into()]).unwrap();
        let (rel2, n2) = a
            .append(at + 1, &["{\"id\":\"b\"}".into(), "{\"id\":\"c\"}".into()])
            .unwrap();
        assert_eq!(rel, rel2);
        assert_eq!(rel, "2026/08/06/07-host_1.2.jsonl.gz");
        let bytes = std::fs::read(dir.join(&rel)).unwrap();
        assert_eq!(bytes.len() as u64, n1 + n2);
        let mut text = String::new();
        MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n");
        // A member cut short (a crash mid-write) leaves the members before it readable.
        let mut cut = bytes.clone();
        cut.truncate(n1 as usize + 5);
        let mut first = Vec::new();
        let _ = MultiGzDecoder::new(&cut[..]).read_to_end(&mut first);
        assert!(first.starts_with(b"{\"id\":\"a\"}\n"), "{first:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
