//! Protobuf wire encoding of `FrameworkInfo` for `RegistryOp::AddFramework`.
//!
//! The registry stores a framework's latest info prost-encoded. `strata-master` does
//! not depend on `prost` directly, so this module writes and reads the (small, stable)
//! message by hand, byte-compatible with prost: fields in number order, proto3
//! defaults omitted, capabilities packed. The decoder also accepts unpacked enums and
//! skips unknown fields, as any protobuf reader must.

use strata_proto::v1::FrameworkInfo;

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot decode a FrameworkInfo from the registry: {0}")]
pub struct DecodeError(&'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    put_key(out, field, 2);
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_str(out, field, s);
    }
}

/// Encodes `info` exactly as prost would.
pub fn encode_framework_info(info: &FrameworkInfo) -> Vec<u8> {
    let mut out = Vec::new();
    put_opt_str(&mut out, 1, &info.id);
    put_opt_str(&mut out, 2, &info.name);
    put_opt_str(&mut out, 3, &info.user);
    for role in &info.roles {
        put_str(&mut out, 4, role);
    }
    if info.failover_timeout_seconds != 0.0 {
        put_key(&mut out, 5, 1);
        out.extend_from_slice(&info.failover_timeout_seconds.to_le_bytes());
    }
    if !info.capabilities.is_empty() {
        let mut packed = Vec::new();
        for c in &info.capabilities {
            // Negative enum values are sign-extended to ten bytes, as in protobuf.
            put_varint(&mut packed, i64::from(*c) as u64);
        }
        put_key(&mut out, 6, 2);
        put_varint(&mut out, packed.len() as u64);
        out.extend_from_slice(&packed);
    }
    put_opt_str(&mut out, 7, &info.hostname);
    put_opt_str(&mut out, 8, &info.principal);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(DecodeError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than ten bytes"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| DecodeError("length too large"))?;
        self.bytes(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.len_delimited()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            _ => Err(DecodeError("unsupported wire type")),
        }
    }
}

/// Decodes bytes written by [`encode_framework_info`] or by prost.
pub fn decode_framework_info(buf: &[u8]) -> Result<FrameworkInfo, DecodeError> {
    let mut r = Reader { buf };
    let mut info = FrameworkInfo::default();
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let field = key >> 3;
        let wire = (key & 7) as u8;
        match (field, wire) {
            (1, 2) => info.id = r.string()?,
            (2, 2) => info.name = r.string()?,
            (3, 2) => info.user = r.string()?,
            (4, 2) => info.roles.push(r.string()?),
            (5, 1) => {
                let b = r.bytes(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                info.failover_timeout_seconds = f64::from_le_bytes(a);
            }
            (6, 2) => {
                let mut inner = Reader {
                    buf: r.len_delimited()?,
                };
                while !inner.buf.is_empty() {
                    info.capabilities.push(inner.varint()? as i64 as i32);
                }
            }
            (6, 0) => info.capabilities.push(r.varint()? as i64 as i32),
            (7, 2) => info.hostname = r.string()?,
            (8, 2) => info.principal = r.string()?,
            (0, _) => return Err(DecodeError("field number 0")),
            (_, w) => r.skip(w)?,
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let info = FrameworkInfo {
            id: "f-1".into(),
            name: "hello".into(),
            user: "ü".into(),
            roles: vec!["web".into(), "*".into()],
            failover_timeout_seconds: 604800.5,
            capabilities: vec![1, 2],
            hostname: "h".into(),
            principal: String::new(),
        };
        let bytes = encode_framework_info(&info);
        assert_eq!(decode_framework_info(&bytes), Ok(info));
        assert_eq!(
            encode_framework_info(&FrameworkInfo::default()),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn known_bytes_match_protobuf() {
        // id "a", roles ["r"], failover 1.0, capabilities [1] (packed), as protoc writes them.
        let info = FrameworkInfo {
            id: "a".into(),
            roles: vec!["r".into()],
            failover_timeout_seconds: 1.0,
            capabilities: vec![1],
            ..Default::default()
        };
        let want = [
            0x0a, 1, b'a', 0x22, 1, b'r', 0x29, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x32, 1, 1,
        ];
        assert_eq!(encode_framework_info(&info), want);
        // Unpacked capabilities and an unknown field (number 15, varint) are accepted.
        let mut unpacked = vec![0x30, 2, 0x78, 5];
        unpacked.extend_from_slice(&want[..3]);
        let got = decode_framework_info(&unpacked).unwrap();
        assert_eq!(got.capabilities, vec![2]);
        assert_eq!(got.id, "a");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_framework_info(&[0x0a, 5, b'a']).is_err());
        assert!(decode_framework_info(&[0xff; 12]).is_err());
        assert!(decode_framework_info(&[0x0b]).is_err());
    }
}
