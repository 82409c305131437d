//! A safetensors file whose tensors arrive one by one: the data is spooled, and the header
//! written once every size is known; and a set of such files (shards, an index).

use super::*;

/// A safetensors file whose tensors are known only one by one: data goes to a spool file,
/// and the file is assembled (header, then the spool) when it ends.
pub(super) struct Spool {
    pub(super) name: String,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) data: BufWriter<File>,
    pub(super) path: PathBuf,
    pub(super) len: u64,
}

impl Spool {
    pub(super) fn push(&mut self, t: StoredTensor) -> io::Result<u64> {
        self.push_bytes(&t.name, t.dtype, t.shape, &t.data)
    }

    pub(super) fn push_bytes(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: Vec<u64>,
        data: &[u8],
    ) -> io::Result<u64> {
        self.data.write_all(data)?;
        let begin = self.len;
        self.len += data.len() as u64;
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dtype,
            shape,
            begin,
            end: self.len,
        });
        Ok(data.len() as u64)
    }
}

/// The spooled weight files of a run and the tensor → file map an index needs.
pub(super) struct SpooledFiles {
    pub(super) dir: PathBuf,
    pub(super) current: Option<Spool>,
    pub(super) weight_map: BTreeMap<String, String>,
    pub(super) total_size: u64,
}

impl SpooledFiles {
    pub(super) fn new(dir: &Path) -> SpooledFiles {
        SpooledFiles {
            dir: dir.to_owned(),
            current: None,
            weight_map: BTreeMap::new(),
            total_size: 0,
        }
    }

    pub(super) fn begin(&mut self, name: &str) -> io::Result<()> {
        let path = self.dir.join(format!(".{name}.data"));
        self.current = Some(Spool {
            name: name.to_owned(),
            tensors: Vec::new(),
            data: BufWriter::with_capacity(1 << 20, File::create(&path)?),
            path,
            len: 0,
        });
        Ok(())
    }

    pub(super) fn spool(&mut self) -> &mut Spool {
        self.current.as_mut().expect("a file is open")
    }

    pub(super) fn end(
        &mut self,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> io::Result<OutputFile> {
        let spool = self.current.take().expect("a file is open");
        let data = spool.data.into_inner().map_err(|e| e.into_error())?;
        drop(data);
        let mut out = HashingFile::create(&self.dir, &spool.name)?;
        out.write(&header_bytes(metadata, &spool.tensors))?;
        let mut data = File::open(&spool.path)?;
        out.copy_from(&mut data)?;
        std::fs::remove_file(&spool.path)?;
        for t in &spool.tensors {
            self.weight_map.insert(t.name.clone(), spool.name.clone());
        }
        self.total_size += spool.len;
        out.finish(&spool.name)
    }

    /// A shard index with this run's tensor names and total size.
    pub(super) fn index(&self, original: &[u8]) -> Vec<u8> {
        let mut index: serde_json::Value =
            serde_json::from_slice(original).unwrap_or_else(|_| json!({}));
        index["metadata"]["total_size"] = self.total_size.into();
        index["weight_map"] = json!(self.weight_map);
        pretty(&index)
    }
}
