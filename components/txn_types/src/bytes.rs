//! Minimal writer and reader of the record formats: fixed-width big-endian integers and
//! `u32`-length-prefixed byte strings. The reader reports truncation instead of panicking.

use crate::{Error, Result};

/// Appends fields to a record buffer.
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new(tag: u8) -> Self {
        Writer(vec![tag])
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).expect("record field longer than 4 GiB");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(v);
    }

    pub(crate) fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads fields from the front of a record.
pub(crate) struct Reader<'a> {
    record: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the tag byte and positions after it.
    pub(crate) fn new(record: &'static str, input: &'a [u8], tag: u8) -> Result<Self> {
        let mut reader = Reader {
            record,
            rest: input,
        };
        let found = reader.u8()?;
        if found != tag {
            return Err(Error::BadTag { record, tag: found });
        }
        Ok(reader)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Truncated {
                record: self.record,
                needed_bytes: n - self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(field, u64::from(v))),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        Ok(self.take(len)?.to_vec())
    }

    pub(crate) fn opt_bytes(&mut self, field: &'static str) -> Result<Option<Vec<u8>>> {
        Ok(if self.bool(field)? {
            Some(self.bytes()?)
        } else {
            None
        })
    }

    pub(crate) fn bad(&self, field: &'static str, value: u64) -> Error {
        Error::BadField {
            record: self.record,
            field,
            value,
        }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                record: self.record,
                extra_bytes: self.rest.len(),
            })
        }
    }
}
