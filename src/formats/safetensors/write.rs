//! Writing safetensors: the header laid out as the reference writer lays it out, the dense
//! writer (each weight file as the input had it, values replaced), and spooled files for the
//! formats that add tensors (compressed-tensors, compact): their data goes to a spool file and
//! the header is written once every tensor's size is known, so memory stays at one tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::formats::safetensors::{Header, TensorInfo};
use crate::formats::writer::{
    ArtifactWriter, HashingFile, OutputFile, TensorOut, WriteError, pretty_json,
};
use crate::numeric::Dtype;

/// A safetensors header for `tensors` laid out as the reference writer does: `__metadata__`
/// first (with `format: pt`, which transformers requires), entries in data order, padded with
/// spaces to a multiple of 8 bytes.
pub fn header_bytes(
    metadata: Option<&BTreeMap<String, String>>,
    tensors: &[TensorInfo],
) -> Vec<u8> {
    let mut json = String::from("{");
    let mut metadata = metadata.cloned().unwrap_or_default();
    metadata
        .entry("format".to_owned())
        .or_insert_with(|| "pt".to_owned());
    json.push_str("\"__metadata__\":");
    json.push_str(&serde_json::to_string(&metadata).expect("strings serialise"));
    for t in tensors {
        json.push(',');
        json.push_str(&serde_json::to_string(&t.name).expect("a string serialises"));
        json.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
            t.dtype.as_str(),
            serde_json::to_string(&t.shape).expect("numbers serialise"),
            t.begin,
            t.end
        ));
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// Dense safetensors: each weight file as the input had it, values replaced.
pub struct DenseWriter {
    dir: PathBuf,
    current: Option<(String, HashingFile)>,
}

impl DenseWriter {
    pub fn new(dir: &Path) -> DenseWriter {
        DenseWriter {
            dir: dir.to_owned(),
            current: None,
        }
    }
}

impl ArtifactWriter for DenseWriter {
    fn begin_file(&mut self, name: &str, header: &Header) -> Result<(), WriteError> {
        let mut out = HashingFile::create(&self.dir, name)?;
        out.write(&header_bytes(header.metadata.as_ref(), &header.tensors))?;
        self.current = Some((name.to_owned(), out));
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, WriteError> {
        let (_, out) = self.current.as_mut().expect("a file is open");
        out.write(tensor.dense)?;
        Ok(tensor.dense.len() as u64)
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, WriteError> {
        let (name, out) = self.current.take().expect("a file is open");
        Ok(Some(out.finish(&name)?))
    }

    fn side_file(&mut self, _: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError> {
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, WriteError> {
        Ok(Vec::new())
    }
}

/// A safetensors file whose tensors are known only one by one: data goes to a spool file,
/// and the file is assembled (header, then the spool) when it ends.
pub(crate) struct Spool {
    name: String,
    tensors: Vec<TensorInfo>,
    data: BufWriter<File>,
    path: PathBuf,
    len: u64,
}

impl Spool {
    pub(crate) fn push_bytes(
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
pub(crate) struct SpooledFiles {
    pub(crate) dir: PathBuf,
    current: Option<Spool>,
    weight_map: BTreeMap<String, String>,
    total_size: u64,
}

impl SpooledFiles {
    pub(crate) fn new(dir: &Path) -> SpooledFiles {
        SpooledFiles {
            dir: dir.to_owned(),
            current: None,
            weight_map: BTreeMap::new(),
            total_size: 0,
        }
    }

    pub(crate) fn begin(&mut self, name: &str) -> io::Result<()> {
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

    pub(crate) fn spool(&mut self) -> &mut Spool {
        self.current.as_mut().expect("a file is open")
    }

    pub(crate) fn end(
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
    pub(crate) fn index(&self, original: &[u8]) -> Vec<u8> {
        let mut index: serde_json::Value =
            serde_json::from_slice(original).unwrap_or_else(|_| json!({}));
        index["metadata"]["total_size"] = self.total_size.into();
        index["weight_map"] = json!(self.weight_map);
        pretty_json(&index)
    }
}
