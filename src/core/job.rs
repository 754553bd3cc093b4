//! The job: what to run (action), when (schedule + zone + DST policy), where (home
//! region) and how (policies). Validation of a whole job lives here and names the
//! offending field. This module must not store, schedule or execute anything.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::action::Action;
use super::ids::{JobName, validate_id};
use super::policy::Policies;
use super::schedule::{Schedule, ScheduleSpec};
use super::{FieldError, Timestamp};

/// Longest description accepted.
pub const DESCRIPTION_LEN_MAX: usize = 1024;
/// Most labels on one job.
pub const LABELS_MAX: usize = 64;

/// A job as stored in the catalog. `uid` is minted at creation, so a job deleted and
/// created again under the same name never shares firing ids with its predecessor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub name: JobName,
    pub uid: Uuid,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    pub schedule: ScheduleSpec,
    pub action: Action,
    #[serde(default)]
    pub policy: Policies,
    #[serde(default)]
    pub paused: bool,
    /// When the job was last paused; with `resumed_at`, the window whose firings the
    /// owner records as `paused` on resume.
    #[serde(default)]
    pub paused_at: Option<Timestamp>,
    #[serde(default)]
    pub resumed_at: Option<Timestamp>,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    /// Bumped on every change; the API's etag.
    pub revision: u64,
    /// The tz database version that computed this job's instants.
    pub tzdb_version: String,
}

impl Job {
    /// Validate everything but the schedule's dependence on "now"; returns the
    /// compiled schedule so callers do not compile twice.
    pub fn validate(&self) -> Result<Schedule, FieldError> {
        validate_id("job.name", self.name.region.as_str())?;
        validate_id("job.name", self.name.job.as_str())?;
        if self.description.len() > DESCRIPTION_LEN_MAX {
            return Err(FieldError::new(
                "description",
                format!("is longer than {DESCRIPTION_LEN_MAX} bytes"),
            ));
        }
        if self.labels.len() > LABELS_MAX {
            return Err(FieldError::new(
                "labels",
                format!("has more than {LABELS_MAX} entries"),
            ));
        }
        for (k, _) in &self.labels {
            validate_id("labels", k)?;
        }
        self.action.validate()?;
        self.policy.validate()?;
        self.schedule.compile()
    }

    /// This job as it replaces `current` in a catalog: same uid, the expected revision
    /// (when given) still current, the revision bumped and the creation time kept.
    /// `Err` says why the update conflicts. Every catalog applies this one rule.
    pub fn replacing(
        mut self,
        current: &Job,
        expected_revision: Option<u64>,
    ) -> Result<Job, String> {
        if current.uid != self.uid {
            return Err(format!("{} was replaced", self.name));
        }
        if let Some(rev) = expected_revision
            && rev != current.revision
        {
            return Err(format!(
                "{} is at revision {}, not {rev}",
                self.name, current.revision
            ));
        }
        self.revision = current.revision + 1;
        self.create_time = current.create_time;
        Ok(self)
    }

    /// The etag the API shows: changes whenever the job does.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.uid.simple(), self.revision)
    }
}
