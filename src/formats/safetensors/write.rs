//! Writing safetensors: the header laid out as the reference writer lays it out, the dense
//! writer (each weight file as the input had it, values replaced), and spooled files for the
//! formats that add tensors (compressed-tensors, compact): their data goes to a spool file and
//! the header is written once every tensor's size is known, so memory stays at one tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::formats::safetensors::{Header, TensorInfo};
use crate::formats::writer::{
    ArtifactWriter, HashingFile, OutputDir, OutputFile, TensorOut, WriteError, pretty_json,
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
    dir: OutputDir,
    current: Option<(String, HashingFile)>,
}

impl DenseWriter {
    pub fn new(dir: &OutputDir) -> DenseWriter {
        DenseWriter {
            dir: dir.clone(),
            current: None,
        }
    }
}

impl ArtifactWriter for DenseWriter {
    fn begin_file(&mut self, name: &str, header: &Header) -> Result<(), WriteError> {
        let mut out = self.dir.create(name)?;
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

/// A safetensors file whose tensors are known only one by one. When its header could be
/// planned (every tensor's name, dtype and shape known before the data), the header is written
/// first and the data straight after it; otherwise data goes to a spool file, and the file is
/// assembled (header, then the spool) when it ends, which writes the data twice.
pub(crate) struct Spool {
    name: String,
    tensors: Vec<TensorInfo>,
    sink: SpoolSink,
    len: u64,
}

enum SpoolSink {
    Spooled {
        data: BufWriter<File>,
        path: PathBuf,
    },
    Direct {
        out: HashingFile,
        planned: Vec<TensorInfo>,
    },
}

impl Spool {
    pub(crate) fn push_bytes(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: Vec<u64>,
        data: &[u8],
    ) -> io::Result<u64> {
        let begin = self.len;
        let info = TensorInfo {
            name: name.to_owned(),
            dtype,
            shape,
            begin,
            end: begin + data.len() as u64,
        };
        match &mut self.sink {
            SpoolSink::Spooled { data: spool, .. } => spool.write_all(data)?,
            SpoolSink::Direct { out, planned } => {
                if planned.get(self.tensors.len()) != Some(&info) {
                    return Err(io::Error::other(format!(
                        "tensor {name:?} ({dtype}, {:?}) is not the one {} planned in its header",
                        info.shape, self.name
                    )));
                }
                out.write(data)?;
            }
        }
        self.len = info.end;
        self.tensors.push(info);
        Ok(data.len() as u64)
    }
}

/// The spooled weight files of a run and the tensor → file map an index needs.
pub(crate) struct SpooledFiles {
    pub(crate) dir: OutputDir,
    current: Option<Spool>,
    weight_map: BTreeMap<String, String>,
    total_size: u64,
}

impl SpooledFiles {
    pub(crate) fn new(dir: &OutputDir) -> SpooledFiles {
        SpooledFiles {
            dir: dir.clone(),
            current: None,
            weight_map: BTreeMap::new(),
            total_size: 0,
        }
    }

    /// Starts file `name`, spooling its data until its tensors are all known.
    pub(crate) fn begin(&mut self, name: &str) -> io::Result<()> {
        let path = self.dir.path.join(format!(".{name}.data"));
        self.current = Some(Spool {
            name: name.to_owned(),
            tensors: Vec::new(),
            sink: SpoolSink::Spooled {
                data: BufWriter::with_capacity(1 << 20, File::create(&path)?),
                path,
            },
            len: 0,
        });
        Ok(())
    }

    /// Starts file `name` whose tensors will be `planned` (name, dtype, shape, in order),
    /// writing its header now and each tensor's data as it comes; with no metadata but the
    /// format, as [`SpooledFiles::end`] with None writes.
    pub(crate) fn begin_planned(
        &mut self,
        name: &str,
        planned: Vec<(String, Dtype, Vec<u64>)>,
    ) -> io::Result<()> {
        let mut offset = 0;
        let planned: Vec<TensorInfo> = planned
            .into_iter()
            .map(|(name, dtype, shape)| {
                let bytes = shape.iter().product::<u64>() * dtype.bits() / 8;
                let info = TensorInfo {
                    name,
                    dtype,
                    shape,
                    begin: offset,
                    end: offset + bytes,
                };
                offset += bytes;
                info
            })
            .collect();
        let mut out = self.dir.create(name)?;
        out.write(&header_bytes(None, &planned))?;
        self.current = Some(Spool {
            name: name.to_owned(),
            tensors: Vec::new(),
            sink: SpoolSink::Direct { out, planned },
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
        let out = match spool.sink {
            SpoolSink::Spooled { data, path } => {
                drop(data.into_inner().map_err(|e| e.into_error())?);
                let mut out = self.dir.create(&spool.name)?;
                out.write(&header_bytes(metadata, &spool.tensors))?;
                out.copy_from(&mut File::open(&path)?)?;
                std::fs::remove_file(&path)?;
                out
            }
            SpoolSink::Direct { out, planned } => {
                if metadata.is_some() || planned.len() != spool.tensors.len() {
                    return Err(io::Error::other(format!(
                        "{} ended with {} of the {} tensors its header planned",
                        spool.name,
                        spool.tensors.len(),
                        planned.len()
                    )));
                }
                out
            }
        };
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
