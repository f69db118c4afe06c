//! Amazon Braket hybrid jobs (`CreateJob`, `POST /job`): billable work like
//! a task, so recorded and policed — the device it reserves is its backend.
//! Its circuits live in the job's container, not the request: qubits and
//! shots stay unknown (a limit on them fails closed in enforce mode).

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes};
use crate::budget::Budget;
use crate::{ParseError, ParseLimits};

const PART: &str = "braket_job";

pub fn parse(body: &[u8], job: &mut QuantumJob, limits: &ParseLimits) -> Result<(), ParseError> {
    Budget::new(limits)
        .prescan_json(body)
        .map_err(|hit| hit.error(PART, ""))?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(PART, format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ParseError::new(PART, "body is not a JSON object"));
    }
    // a fixed name: the caller's jobName could pose as another program
    job.program = Some("hybrid_job".into());
    job.backend = str_at(&v, "/deviceConfig/device");
    job.output_location = str_at(&v, "/outputDataConfig/s3Path");
    if let Some((count, bytes)) = v.get("tags").and_then(tag_sizes) {
        job.tags = Some(count);
        job.tags_bytes = Some(bytes);
    }
    if job.backend.is_none() {
        return Err(ParseError::new(PART, "deviceConfig.device is missing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_job_names_its_device() {
        let mut job = QuantumJob::default();
        parse(
            br#"{"jobName": "sweep-1", "deviceConfig": {"device": "arn:aws:braket:::device/qpu/ionq/Aria-1"},
                 "algorithmSpecification": {"scriptModeConfig": {"entryPoint": "a:main", "s3Uri": "s3://b/a.tar.gz"}},
                 "instanceConfig": {"instanceType": "ml.m5.large", "instanceCount": 1, "volumeSizeInGb": 30},
                 "roleArn": "arn:aws:iam::1:role/r", "outputDataConfig": {"s3Path": "s3://b/out"},
                 "tags": {"team": "q"}}"#,
            &mut job,
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(
            job.backend.as_deref(),
            Some("arn:aws:braket:::device/qpu/ionq/Aria-1")
        );
        assert_eq!(job.program.as_deref(), Some("hybrid_job"));
        assert_eq!((job.tags, job.qubits, job.shots), (Some(1), None, None));
        let e = parse(b"{}", &mut QuantumJob::default(), &ParseLimits::default()).unwrap_err();
        assert!(e.to_string().contains("deviceConfig.device"), "{e}");
    }
}
