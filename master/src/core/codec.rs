//! Protobuf encoding of `FrameworkInfo` for `RegistryOp::AddFramework`: the registry
//! stores a framework's latest info in its wire form, so that fields added to the
//! .proto later are read back by newer masters.

use prost::Message;
use strata_proto::v1::FrameworkInfo;

/// The wire bytes of `info`.
pub fn encode_framework_info(info: &FrameworkInfo) -> Vec<u8> {
    info.encode_to_vec()
}

/// Reads back what [`encode_framework_info`] wrote.
pub fn decode_framework_info(bytes: &[u8]) -> Result<FrameworkInfo, prost::DecodeError> {
    FrameworkInfo::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::FrameworkCapability;

    #[test]
    fn round_trip() {
        let info = FrameworkInfo {
            id: "fw".into(),
            name: "n".into(),
            roles: vec!["a".into(), "b".into()],
            failover_timeout_seconds: 7.5,
            capabilities: vec![FrameworkCapability::PartitionAware as i32],
            ..Default::default()
        };
        assert_eq!(
            decode_framework_info(&encode_framework_info(&info)).unwrap(),
            info
        );
        assert!(decode_framework_info(&[0xff, 0xff, 0xff]).is_err());
    }
}
