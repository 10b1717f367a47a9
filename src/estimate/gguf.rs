//! A small GGUF header reader: magic, version (2 or 3), metadata key/values and tensor infos.
//! It streams from any `Read`, consumes only the header (never tensor data), skips what it does
//! not keep (tokenizer strings) without allocating, and answers garbage with errors, never panics.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::EstimateError;

/// Strings longer than this are skipped rather than kept.
const MAX_KEPT_STRING: u64 = 64 * 1024;
/// Integer arrays up to this length are kept (per-layer head counts).
const MAX_KEPT_ARRAY: u64 = 4096;
/// Keys and tensor names are short; longer ones mean garbage.
const MAX_KEY: u64 = 1024 * 1024;
/// No real header is larger than this; anything beyond is not read.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024 * 1024;
/// GGML_MAX_DIMS is 4; accept a little more, reject garbage.
const MAX_DIMS: u32 = 8;
const MAX_NESTING: u32 = 3;

/// One metadata value as kept by the reader.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    /// `None` when the string was too long to keep.
    Str(Option<String>),
    /// Length, plus the elements when they are integers and the array is short.
    Array {
        len: u64,
        ints: Vec<i128>,
    },
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(v) => u64::try_from(*v).ok(),
            // Per-layer arrays (head_count_kv on some models): the largest value.
            Self::Array { ints, .. } => ints.iter().filter_map(|v| u64::try_from(*v).ok()).max(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(Some(s)) => Some(s),
            _ => None,
        }
    }
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufHeader {
    pub version: u32,
    pub tensor_count: u64,
    pub metadata: BTreeMap<String, GgufValue>,
    /// Σ tensor sizes from the tensor infos (ggml type sizes).
    pub tensor_bytes: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }
}

/// (block size, bytes per block) of a ggml type id; `None` for unknown or removed types.
pub fn ggml_type_size(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// Reads a GGUF header. `file` names the source in errors.
pub fn parse_gguf<R: Read>(reader: R, file: &str) -> Result<GgufHeader, EstimateError> {
    let mut r = Reader { inner: reader.take(MAX_HEADER_BYTES), file };
    let magic = r.bytes4("magic")?;
    if &magic != b"GGUF" {
        return Err(EstimateError::NotGguf { file: file.to_owned() });
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(EstimateError::GgufVersion { file: file.to_owned(), version });
    }
    let tensor_count = r.u64("tensor_count")?;
    let kv_count = r.u64("metadata_kv_count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        let ty = r.u32(&key)?;
        let value = r.value(ty, &key, 0)?;
        metadata.insert(key, value);
    }
    let mut tensor_bytes: u64 = 0;
    for _ in 0..tensor_count {
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims > MAX_DIMS {
            return Err(r.invalid(&name, format!("{n_dims} dimensions")));
        }
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let dim = r.u64(&name)?;
            elems = elems.checked_mul(dim).ok_or_else(|| r.invalid(&name, "element count overflows".into()))?;
        }
        let ty = r.u32(&name)?;
        let (block, size) = ggml_type_size(ty).ok_or_else(|| r.invalid(&name, format!("unknown ggml type {ty}")))?;
        let _offset = r.u64(&name)?;
        let bytes = u128::from(elems / block) * u128::from(size);
        tensor_bytes = tensor_bytes.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
    Ok(GgufHeader { version, tensor_count, metadata, tensor_bytes })
}

struct Reader<'a, R> {
    inner: io::Take<R>,
    file: &'a str,
}

impl<R: Read> Reader<'_, R> {
    fn err(&self, field: &str, e: io::Error) -> EstimateError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            EstimateError::Truncated { file: self.file.to_owned(), field: field.to_owned() }
        } else {
            EstimateError::Io { path: self.file.to_owned(), source: e }
        }
    }

    fn invalid(&self, field: &str, reason: String) -> EstimateError {
        EstimateError::Invalid { file: self.file.to_owned(), field: field.to_owned(), reason }
    }

    fn exact<const N: usize>(&mut self, field: &str) -> Result<[u8; N], EstimateError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| self.err(field, e))?;
        Ok(buf)
    }

    fn bytes4(&mut self, field: &str) -> Result<[u8; 4], EstimateError> {
        self.exact::<4>(field)
    }

    fn u32(&mut self, field: &str) -> Result<u32, EstimateError> {
        Ok(u32::from_le_bytes(self.exact::<4>(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, EstimateError> {
        Ok(u64::from_le_bytes(self.exact::<8>(field)?))
    }

    fn skip(&mut self, n: u64, field: &str) -> Result<(), EstimateError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|e| self.err(field, e))?;
        if copied < n {
            return Err(EstimateError::Truncated { file: self.file.to_owned(), field: field.to_owned() });
        }
        Ok(())
    }

    /// A key or name: must be short and UTF-8.
    fn string(&mut self, field: &str) -> Result<String, EstimateError> {
        let len = self.u64(field)?;
        if len > MAX_KEY {
            return Err(self.invalid(field, format!("string of {len} bytes")));
        }
        let mut buf = Vec::new();
        let read = (&mut self.inner).take(len).read_to_end(&mut buf).map_err(|e| self.err(field, e))?;
        if (read as u64) < len {
            return Err(EstimateError::Truncated { file: self.file.to_owned(), field: field.to_owned() });
        }
        String::from_utf8(buf).map_err(|_| self.invalid(field, "not UTF-8".into()))
    }

    /// A string value: kept when short, skipped otherwise.
    fn string_value(&mut self, field: &str) -> Result<Option<String>, EstimateError> {
        let len = self.u64(field)?;
        if len > MAX_KEPT_STRING {
            self.skip(len, field)?;
            return Ok(None);
        }
        let mut buf = Vec::new();
        let read = (&mut self.inner).take(len).read_to_end(&mut buf).map_err(|e| self.err(field, e))?;
        if (read as u64) < len {
            return Err(EstimateError::Truncated { file: self.file.to_owned(), field: field.to_owned() });
        }
        Ok(String::from_utf8(buf).ok())
    }

    fn value(&mut self, ty: u32, field: &str, depth: u32) -> Result<GgufValue, EstimateError> {
        Ok(match ty {
            0 => GgufValue::Int(i128::from(self.exact::<1>(field)?[0])),
            1 => GgufValue::Int(i128::from(i8::from_le_bytes(self.exact::<1>(field)?))),
            2 => GgufValue::Int(i128::from(u16::from_le_bytes(self.exact::<2>(field)?))),
            3 => GgufValue::Int(i128::from(i16::from_le_bytes(self.exact::<2>(field)?))),
            4 => GgufValue::Int(i128::from(self.u32(field)?)),
            5 => GgufValue::Int(i128::from(i32::from_le_bytes(self.exact::<4>(field)?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.exact::<4>(field)?))),
            7 => GgufValue::Bool(self.exact::<1>(field)?[0] != 0),
            8 => GgufValue::Str(self.string_value(field)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.invalid(field, "arrays nested too deep".into()));
                }
                let elem = self.u32(field)?;
                let len = self.u64(field)?;
                self.array(elem, len, field, depth)?
            }
            10 => GgufValue::Int(i128::from(self.u64(field)?)),
            11 => GgufValue::Int(i128::from(i64::from_le_bytes(self.exact::<8>(field)?))),
            12 => GgufValue::Float(f64::from_le_bytes(self.exact::<8>(field)?)),
            other => return Err(self.invalid(field, format!("unknown value type {other}"))),
        })
    }

    fn array(&mut self, elem: u32, len: u64, field: &str, depth: u32) -> Result<GgufValue, EstimateError> {
        let fixed = match elem {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        let is_int = matches!(elem, 0..=5 | 10 | 11);
        match fixed {
            Some(_) if is_int && len <= MAX_KEPT_ARRAY => {
                let mut ints = Vec::new();
                for _ in 0..len {
                    if let GgufValue::Int(v) = self.value(elem, field, depth + 1)? {
                        ints.push(v);
                    }
                }
                Ok(GgufValue::Array { len, ints })
            }
            Some(size) => {
                let total = len.checked_mul(size).ok_or_else(|| self.invalid(field, format!("array of {len}")))?;
                self.skip(total, field)?;
                Ok(GgufValue::Array { len, ints: Vec::new() })
            }
            None if elem == 8 => {
                for _ in 0..len {
                    let n = self.u64(field)?;
                    self.skip(n, field)?;
                }
                Ok(GgufValue::Array { len, ints: Vec::new() })
            }
            None => {
                for _ in 0..len {
                    self.value(elem, field, depth + 1)?;
                }
                Ok(GgufValue::Array { len, ints: Vec::new() })
            }
        }
    }
}
