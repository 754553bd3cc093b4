//! Newtype identifiers: regions, jobs, nodes, epochs, firings, and the resource names
//! `regions/{region}/jobs/{job}` and `.../runs/{run}`. Parsing and validation of ids
//! live here; this module must not know about storage keys or proto types.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::FieldError;

/// Longest region or job id accepted.
pub const ID_LEN_MAX: usize = 63;

/// Check an id used in a resource name: 1-63 of `[a-z0-9-]`, starting with a letter,
/// not ending with `-` (AIP-122 style, so names are safe in URLs and keys).
pub fn validate_id(field: &str, id: &str) -> Result<(), FieldError> {
    let bad = |m: &str| Err(FieldError::new(field, format!("{id:?} {m}")));
    if id.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if id.len() > ID_LEN_MAX {
        return bad(&format!("is longer than {ID_LEN_MAX} characters"));
    }
    if !id.as_bytes()[0].is_ascii_lowercase() {
        return bad("must start with a lowercase letter");
    }
    if id.ends_with('-') {
        return bad("must not end with '-'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("may contain only lowercase letters, digits and '-'");
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A region: a named failure domain (`us-east`, `local`).
    RegionId
);
string_id!(
    /// A job's id within its region.
    JobId
);
string_id!(
    /// A node (one `meridian serve` process).
    NodeId
);

/// An owner's fencing token: strictly increasing across terms.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One (job, scheduled instant) pair's id; also the id of its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FiringId(pub Uuid);

impl fmt::Display for FiringId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `regions/{region}/jobs/{job}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobName {
    pub region: RegionId,
    pub job: JobId,
}

impl JobName {
    pub fn new(region: impl Into<String>, job: impl Into<String>) -> Self {
        Self {
            region: RegionId(region.into()),
            job: JobId(job.into()),
        }
    }

    /// Parse `regions/{region}/jobs/{job}`; `field` names the request field for errors.
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["regions", region, "jobs", job] => {
                validate_id(field, region)?;
                validate_id(field, job)?;
                Ok(Self::new(*region, *job))
            }
            _ => Err(FieldError::new(
                field,
                format!("{s:?} is not a job name of the form regions/{{region}}/jobs/{{job}}"),
            )),
        }
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "regions/{}/jobs/{}", self.region, self.job)
    }
}

/// `regions/{region}/jobs/{job}/runs/{firing id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunName {
    pub job: JobName,
    pub firing: FiringId,
}

impl RunName {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let (job, run) = s.rsplit_once("/runs/").ok_or_else(|| {
            FieldError::new(
                field,
                format!("{s:?} is not a run name of the form regions/{{region}}/jobs/{{job}}/runs/{{run}}"),
            )
        })?;
        let job = JobName::parse(field, job)?;
        let firing = Uuid::parse_str(run)
            .map_err(|_| FieldError::new(field, format!("run id {run:?} is not a uuid")))?;
        Ok(Self {
            job,
            firing: FiringId(firing),
        })
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/runs/{}", self.job, self.firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("f", "eu-west-1").is_ok());
        for bad in ["", "1abc", "Abc", "a_b", "a-", &"a".repeat(64)] {
            let e = validate_id("job.id", bad).unwrap_err();
            assert_eq!(e.field, "job.id", "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        let n = JobName::parse("name", "regions/local/jobs/nightly").unwrap();
        assert_eq!(n.to_string(), "regions/local/jobs/nightly");
        assert!(JobName::parse("name", "regions/local/jobs").is_err());
        assert!(JobName::parse("name", "jobs/x").is_err());
        let r = RunName::parse(
            "name",
            "regions/local/jobs/nightly/runs/6f9619ff-8b86-d011-b42d-00c04fc964ff",
        )
        .unwrap();
        assert_eq!(r.job, n);
        assert!(RunName::parse("name", "regions/local/jobs/nightly/runs/x").is_err());
    }
}
