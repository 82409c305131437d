-- Why a tensor got other steps than its recipe names (a GGUF type chosen by llama-quantize's
-- rules, a fallback for rows that are not whole blocks or groups). Null when it got exactly
-- what the recipe says.
alter table job_tensors add column note text;
