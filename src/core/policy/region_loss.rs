//! Region-loss policy: what the owner does with a job's firing when the job's home
//! region has no live node (no member holds a lease there). Pure: which regions are
//! live comes in as an argument. Must not look membership up itself.

use serde::{Deserialize, Serialize};

use crate::core::FieldError;
use crate::core::ids::{RegionId, validate_id};

/// A job's region-loss policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionLoss {
    /// Record the firing `paused` with the reason (default): nothing runs outside the
    /// job's home region.
    #[default]
    Pause,
    /// Run the firing in this region instead, while the home region is lost.
    Failover(RegionId),
}

/// What happens to one firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Dispatch to this region (the home region, or the failover one).
    Dispatch(RegionId),
    /// Record the firing `paused`, with this reason.
    Pause(String),
}

impl RegionLoss {
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            RegionLoss::Pause => Ok(()),
            RegionLoss::Failover(r) => validate_id("policy.region_loss.failover", r.as_str()),
        }
    }
}

/// Where a firing of a job homed in `home` goes, given the regions with a live node
/// (`live`, any order).
pub fn decide(policy: &RegionLoss, home: &RegionId, live: &[RegionId]) -> Decision {
    if live.contains(home) {
        return Decision::Dispatch(home.clone());
    }
    match policy {
        RegionLoss::Pause => Decision::Pause(format!(
            "region {home} has no live node (region_loss = pause)"
        )),
        RegionLoss::Failover(to) if live.contains(to) => Decision::Dispatch(to.clone()),
        RegionLoss::Failover(to) => Decision::Pause(format!(
            "region {home} has no live node, nor has its failover region {to}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::from(s)
    }

    #[test]
    fn live_home_always_dispatches_home() {
        for p in [RegionLoss::Pause, RegionLoss::Failover(r("b"))] {
            assert_eq!(
                decide(&p, &r("a"), &[r("a"), r("b")]),
                Decision::Dispatch(r("a"))
            );
        }
    }

    #[test]
    fn lost_home_pauses_or_fails_over() {
        let live = [r("b")];
        assert!(matches!(
            decide(&RegionLoss::Pause, &r("a"), &live),
            Decision::Pause(why) if why.contains("region a")
        ));
        assert_eq!(
            decide(&RegionLoss::Failover(r("b")), &r("a"), &live),
            Decision::Dispatch(r("b"))
        );
        assert!(matches!(
            decide(&RegionLoss::Failover(r("c")), &r("a"), &live),
            Decision::Pause(why) if why.contains("failover region c")
        ));
    }

    #[test]
    fn serde_forms() {
        assert_eq!(
            serde_json::to_string(&RegionLoss::Pause).unwrap(),
            r#""pause""#
        );
        let f: RegionLoss = serde_json::from_str(r#"{"failover":"eu-west"}"#).unwrap();
        assert_eq!(f, RegionLoss::Failover(r("eu-west")));
        assert!(RegionLoss::Failover(r("Bad Region")).validate().is_err());
    }
}
