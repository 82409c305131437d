-- Whether a floating-point tensor holds a NaN or an infinity, found while the upload streamed
-- past. A job that would compress such a tensor is refused at submission, naming it; the
-- upload itself is kept (a checkpoint may carry -inf masks in tensors no recipe selects).
alter table model_tensors add column non_finite boolean not null default false;
