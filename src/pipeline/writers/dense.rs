//! Dense safetensors: each weight file as the input had it, values replaced.

use super::*;

/// Dense safetensors: each weight file as the input had it, values replaced.
pub(super) struct DenseWriter {
    pub(super) dir: PathBuf,
    pub(super) current: Option<(String, HashingFile)>,
}

impl ArtifactWriter for DenseWriter {
    fn begin_file(&mut self, input: &InputFile, header: &Header) -> Result<(), PipelineError> {
        let mut out = HashingFile::create(&self.dir, &input.name)?;
        out.write(&header_bytes(header.metadata.as_ref(), &header.tensors))?;
        self.current = Some((input.name.clone(), out));
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError> {
        let (_, out) = self.current.as_mut().expect("a file is open");
        out.write(tensor.dense)?;
        Ok(tensor.dense.len() as u64)
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError> {
        let (name, out) = self.current.take().expect("a file is open");
        Ok(Some(out.finish(&name)?))
    }

    fn side_file(&mut self, _: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError> {
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError> {
        Ok(Vec::new())
    }
}
