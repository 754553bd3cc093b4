//! The `meridian.v1.Scheduler` service: one handler per RPC. Each parses and
//! validates its request (through `convert` and the core's rules), calls the ports or
//! the node's actors, and converts the answer back.
//!
//! Must not make scheduling decisions (the owner does), must not turn errors into
//! statuses itself (`errors` does), and must not store anything a request got wrong:
//! every check runs before the first write.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono_tz::Tz;
use prost::Message as _;
use ractor::rpc::CallResult;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert::{self, proto_field, zone};
use super::errors::{Error, Result};
use super::page::{self, Tokens};
use super::{Context, pb};
use crate::actors::node_supervisor::NodeSupervisorMsg;
use crate::actors::schedule_owner::ScheduleOwnerMsg;
use crate::core::FieldError;
use crate::core::firing::{Cause, firing_id};
use crate::core::ids::{FiringId, JobName, RegionId, RunName, validate_id};
use crate::core::job::Job;
use crate::core::owner::shard_of;
use crate::core::policy::hash::fnv1a64;
use crate::core::run::{Run, Trigger};
use crate::core::schedule::{self, Firing};
use crate::ports::{self, Claim, Dispatch, JobFilter};
use std::sync::Arc;

/// How long a call to a node actor (supervisor, owner) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `request_id` accepted (a UUID is 36).
pub const REQUEST_ID_LEN_MAX: usize = 128;
/// Trigger request ids remembered for idempotent retries (oldest forgotten first).
pub const TRIGGER_REQUESTS_MAX: usize = 10_000;
/// Read-modify-write attempts of pause/resume without an etag before giving up.
const UPDATE_TRIES_MAX: usize = 3;
/// Firings a preview shows when the request gives no count (at most
/// `schedule::PREVIEW_COUNT_MAX`; larger counts are coerced down to it).
pub const PREVIEW_COUNT_DEFAULT: usize = 10;
/// `parent` of a listing across every region.
const EVERY_REGION: &str = "regions/-";

/// Manual triggers by request id, so that a retried TriggerJob returns the run the
/// first call placed. Bounded and in memory: a retry after the node restarted, or to
/// another node, places a new run (the firing id includes the trigger instant, so the
/// store cannot deduplicate it by itself).
#[derive(Default)]
struct TriggerMemo {
    order: VecDeque<String>,
    runs: HashMap<String, (JobName, FiringId)>,
}

impl TriggerMemo {
    fn remember(&mut self, request_id: String, job: JobName, firing: FiringId) {
        if let Some(slot) = self.runs.get_mut(&request_id) {
            *slot = (job, firing);
            return;
        }
        if self.runs.len() >= TRIGGER_REQUESTS_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.runs.remove(&old);
        }
        self.order.push_back(request_id.clone());
        self.runs.insert(request_id, (job, firing));
    }
}

/// The Scheduler service over one node's [`Context`].
pub struct Service {
    ctx: Context,
    tokens: Tokens,
    /// Held across a whole trigger with a request id, so that concurrent retries of
    /// one request cannot both place a run. Manual triggers are rare; serializing
    /// those that carry a request id costs nothing that matters.
    triggers: tokio::sync::Mutex<TriggerMemo>,
}

/// `regions/{region}` of a request field.
fn parse_parent(field: &str, parent: &str) -> std::result::Result<RegionId, FieldError> {
    match parent.strip_prefix("regions/") {
        Some(region) if !region.contains('/') => {
            validate_id(field, region)?;
            Ok(RegionId(region.to_owned()))
        }
        _ => Err(FieldError::new(
            field,
            format!("{parent:?} is not a region name of the form regions/{{region}}"),
        )),
    }
}

fn validate_request_id(id: &str) -> std::result::Result<(), FieldError> {
    if id.len() > REQUEST_ID_LEN_MAX {
        return Err(FieldError::new(
            "request_id",
            format!("is longer than {REQUEST_ID_LEN_MAX} bytes"),
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            "request_id",
            "may contain only printable ascii characters",
        ));
    }
    Ok(())
}

/// A job field error as a request field path: `job.` plus the core's path (and the
/// proto's spelling where it differs from the core's).
fn in_job(e: FieldError) -> Error {
    let mut e = FieldError::new(proto_field(e.field), e.message);
    if !e.field.starts_with("job.") {
        e = e.within("job");
    }
    Error::Field(e)
}

/// The anchor of an interval that names none: `t` in whole seconds, so that its
/// firings land on whole seconds too (`every 5s` fires at :00, :05, ..., not at
/// :00.932450407).
fn anchor_default(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    t.trunc_subsecs(0)
}

/// Whether an etag from a request (quoted or not) is the job's current one.
fn etag_matches(job: &Job, etag: &str) -> bool {
    etag.trim_matches('"') == job.etag().trim_matches('"')
}

impl Service {
    pub fn new(ctx: Context) -> Self {
        let tokens = Tokens::new(&ctx.page_key);
        Self {
            ctx,
            tokens,
            triggers: tokio::sync::Mutex::new(TriggerMemo::default()),
        }
    }

    /// Writes go only to regions this endpoint serves.
    fn check_served(&self, region: &RegionId) -> Result<()> {
        if self.ctx.regions.contains(region) {
            Ok(())
        } else {
            Err(Error::RegionNotServed {
                region: region.to_string(),
                served: self.ctx.regions.iter().map(ToString::to_string).collect(),
            })
        }
    }

    async fn get(&self, name: &JobName) -> Result<Job> {
        self.ctx
            .catalog
            .get_job(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                name: name.to_string(),
            })
    }

    /// The job's next firing after its progress cursor (the last scheduled instant
    /// the owner handled), never after "now": a late owner does not hide firings due.
    async fn next_firing(&self, job: &Job) -> Result<Option<Firing>> {
        let cursor = self
            .ctx
            .runs
            .cursor(job.uid)
            .await?
            .unwrap_or(job.create_time);
        Ok(job
            .schedule
            .compile()
            .ok()
            .and_then(|s| s.next_after(cursor)))
    }

    async fn job_out(&self, job: &Job, warnings: Vec<String>) -> Result<pb::Job> {
        let next = self.next_firing(job).await?;
        Ok(convert::job_out(job, next.as_ref(), warnings))
    }

    /// The zone a run of `job` renders in: its job's, or UTC if the job is gone.
    async fn run_zone(&self, run: &Run) -> Result<Tz> {
        Ok(match self.ctx.catalog.get_job(&run.job).await? {
            Some(j) if j.uid == run.job_uid => zone(&j.schedule),
            _ => Tz::UTC,
        })
    }

    async fn create_job(&self, req: pb::CreateJobRequest) -> Result<pb::Job> {
        let region = parse_parent("parent", &req.parent)?;
        self.check_served(&region)?;
        validate_id("job_id", &req.job_id)?;
        validate_request_id(&req.request_id)?;
        let input = req
            .job
            .ok_or_else(|| FieldError::new("job", "is required"))?;
        let now = self.ctx.clock.now();
        let job = Job {
            name: JobName::new(region.0, req.job_id),
            uid: Uuid::new_v4(),
            description: input.description,
            labels: convert::labels_in(input.labels),
            schedule: convert::schedule_in(input.schedule, anchor_default(now)).map_err(in_job)?,
            action: convert::action_in(input.action).map_err(in_job)?,
            policy: convert::policy_in(input.policy).map_err(in_job)?,
            paused: false,
            paused_at: None,
            resumed_at: None,
            create_time: now,
            update_time: now,
            revision: 1,
            tzdb_version: schedule::TZDB_VERSION.to_owned(),
        };
        job.validate().map_err(in_job)?;
        let (_, warnings) = job.schedule.validate_for_create(now).map_err(in_job)?;
        if req.validate_only {
            return self.job_out(&job, warnings).await;
        }
        let request_id = (!req.request_id.is_empty()).then_some(req.request_id);
        let stored = self.ctx.catalog.create_job(job, request_id).await?;
        self.job_out(&stored, warnings).await
    }

    async fn list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse> {
        let filter = if req.parent == EVERY_REGION {
            JobFilter { region: None }
        } else {
            JobFilter {
                region: Some(parse_parent("parent", &req.parent)?),
            }
        };
        let size = page::page_size(req.page_size)?;
        let after = self.tokens.jobs_cursor(&req.parent, &req.page_token)?;
        // One more than a page tells whether another page follows.
        let mut jobs = self.ctx.catalog.list_jobs(&filter, after, size + 1).await?;
        let mut more = jobs.len() > size;
        jobs.truncate(size);
        let mut out = Vec::with_capacity(jobs.len());
        let mut bytes = 0;
        for job in &jobs {
            let shown = self.job_out(job, Vec::new()).await?;
            // A short page rather than a response clients refuse (AIP-158 allows it).
            bytes += shown.encoded_len();
            if !out.is_empty() && bytes > page::PAGE_BYTES_MAX {
                more = true;
                break;
            }
            out.push(shown);
        }
        let next_page_token = if more {
            let last = &jobs[out.len() - 1];
            self.tokens
                .jobs(&req.parent, &(last.create_time, last.name.clone()))
        } else {
            String::new()
        };
        Ok(pb::ListJobsResponse {
            jobs: out,
            next_page_token,
        })
    }

    async fn delete_job(&self, req: pb::DeleteJobRequest) -> Result<()> {
        let name = JobName::parse("name", &req.name)?;
        self.check_served(&name.region)?;
        if !req.etag.is_empty() {
            let job = self.get(&name).await?;
            // Tolerated race: a change between this check and the delete is not seen
            // (the catalog's delete takes no expected revision).
            if !etag_matches(&job, &req.etag) {
                return Err(Error::EtagMismatch {
                    name: name.to_string(),
                    current: job.etag(),
                });
            }
        }
        let job = self.ctx.catalog.delete_job(&name).await?;
        // Logs apart from the catalog (mesh mode: Redis) drop the runs now; a start
        // racing with this is refused, its run being gone.
        self.ctx.runs.delete_job_runs(job.uid).await?;
        Ok(())
    }

    async fn set_paused(&self, name: &str, etag: &str, paused: bool) -> Result<pb::Job> {
        let name = JobName::parse("name", name)?;
        self.check_served(&name.region)?;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut job = self.get(&name).await?;
            if !etag.is_empty() && !etag_matches(&job, etag) {
                return Err(Error::EtagMismatch {
                    name: name.to_string(),
                    current: job.etag(),
                });
            }
            if job.paused == paused {
                return self.job_out(&job, Vec::new()).await;
            }
            let now = self.ctx.clock.now();
            job.paused = paused;
            if paused {
                job.paused_at = Some(now);
            } else {
                job.resumed_at = Some(now);
            }
            job.update_time = now;
            let revision = job.revision;
            match self.ctx.catalog.update_job(job, Some(revision)).await {
                Ok(job) => return self.job_out(&job, Vec::new()).await,
                // Without an etag the caller asked for a state, not a version: a
                // concurrent change is read again rather than reported.
                Err(ports::Error::Conflict(_)) if etag.is_empty() && tries < UPDATE_TRIES_MAX => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fire `job` now: through this node's owner of the job's shard, or (mesh mode,
    /// another node owns it) claimed and dispatched from here.
    async fn place_trigger(&self, job: &Job, override_overlap: bool, nonce: u64) -> Result<Run> {
        let shard = shard_of(&job.uid, self.ctx.shards);
        let owner = match self
            .ctx
            .supervisor
            .call(|r| NodeSupervisorMsg::Owner(shard, r), Some(CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(Some(owner))) => owner,
            Ok(CallResult::Success(None)) if self.ctx.membership.is_some() => {
                return self.trigger_here(job, shard, override_overlap, nonce).await;
            }
            Ok(CallResult::Success(None)) => return Err(Error::NoOwner),
            _ => return Err(Error::Actor("the node supervisor did not answer".into())),
        };
        let reply = owner
            .call(
                |reply| ScheduleOwnerMsg::Trigger {
                    job: job.name.clone(),
                    override_overlap,
                    nonce,
                    reply,
                },
                Some(CALL_TIMEOUT),
            )
            .await;
        match reply {
            Ok(CallResult::Success(Ok(run))) => Ok(run),
            Ok(CallResult::Success(Err(message))) => Err(Error::Owner(message)),
            _ => Err(Error::Actor("the schedule owner did not answer".into())),
        }
    }

    async fn trigger_job(&self, req: pb::TriggerJobRequest) -> Result<pb::Run> {
        let name = JobName::parse("name", &req.name)?;
        self.check_served(&name.region)?;
        validate_request_id(&req.request_id)?;
        let job = self.get(&name).await?;
        if job.paused {
            return Err(Error::JobPaused {
                name: name.to_string(),
            });
        }
        let tz = zone(&job.schedule);
        if req.request_id.is_empty() {
            // Distinguishes triggers that land on the same instant.
            let nonce = Uuid::new_v4().as_u64_pair().0;
            let run = self
                .place_trigger(&job, req.override_overlap, nonce)
                .await?;
            return Ok(convert::run_out(&run, tz));
        }
        let mut memo = self.triggers.lock().await;
        if let Some((earlier_job, firing)) = memo.runs.get(&req.request_id) {
            if *earlier_job != name {
                return Err(FieldError::new(
                    "request_id",
                    format!("was already used to trigger {earlier_job}"),
                )
                .into());
            }
            if let Some(run) = self.ctx.runs.get_run(*firing).await? {
                return Ok(convert::run_out(&run, tz));
            }
            // The run is gone (retention, or the job was replaced): trigger afresh.
        }
        let nonce = fnv1a64(req.request_id.as_bytes());
        let run = self
            .place_trigger(&job, req.override_overlap, nonce)
            .await?;
        memo.remember(req.request_id, name, run.firing);
        Ok(convert::run_out(&run, tz))
    }

    async fn list_runs(&self, req: pb::ListRunsRequest) -> Result<pb::ListRunsResponse> {
        let name = JobName::parse("parent", &req.parent)?;
        let job = self.get(&name).await?;
        let size = page::page_size(req.page_size)?;
        let before = self
            .tokens
            .runs_cursor(&req.parent, job.uid, &req.page_token)?;
        let mut runs = self.ctx.runs.list_runs(job.uid, before, size + 1).await?;
        let mut more = runs.len() > size;
        runs.truncate(size);
        let tz = zone(&job.schedule);
        let mut out = Vec::with_capacity(runs.len());
        let mut bytes = 0;
        for run in &runs {
            let shown = convert::run_out(run, tz);
            bytes += shown.encoded_len();
            if !out.is_empty() && bytes > page::PAGE_BYTES_MAX {
                more = true;
                break;
            }
            out.push(shown);
        }
        let next_page_token = if more {
            let last = &runs[out.len() - 1];
            self.tokens
                .runs(&req.parent, job.uid, (last.scheduled_at, last.firing))
        } else {
            String::new()
        };
        Ok(pb::ListRunsResponse {
            runs: out,
            next_page_token,
        })
    }

    async fn get_run(&self, req: pb::GetRunRequest) -> Result<pb::Run> {
        let name = RunName::parse("name", &req.name)?;
        let run = self
            .ctx
            .runs
            .get_run(name.firing)
            .await?
            .filter(|r| r.job == name.job)
            .ok_or_else(|| Error::NotFound {
                name: name.to_string(),
            })?;
        let tz = self.run_zone(&run).await?;
        Ok(convert::run_out(&run, tz))
    }

    async fn preview(
        &self,
        req: pb::PreviewScheduleRequest,
    ) -> Result<pb::PreviewScheduleResponse> {
        use pb::preview_schedule_request::Source;
        let now = self.ctx.clock.now();
        let from = match &req.start_time {
            Some(t) => convert::timestamp_in("start_time", t)?,
            None => now,
        };
        let count = match req.count {
            0 => PREVIEW_COUNT_DEFAULT,
            n if n < 0 => return Err(FieldError::new("count", "must not be negative").into()),
            n => (n as usize).min(schedule::PREVIEW_COUNT_MAX),
        };
        let spec = match req.source {
            Some(Source::Job(name)) => {
                let name = JobName::parse("job", &name)?;
                self.get(&name).await?.schedule
            }
            // Field paths are already the request's (`schedule.cron`). An inline
            // interval without an anchor counts from the preview's start.
            Some(Source::Schedule(s)) => convert::schedule_in(Some(s), anchor_default(from))?,
            None => {
                return Err(FieldError::new("schedule", "is required (or name a job)").into());
            }
        };
        let compiled = spec
            .compile()
            .map_err(|e| FieldError::new(proto_field(e.field), e.message))?;
        // Warnings are about the year ahead of now; a schedule that could not be
        // created now (a once in the past) still previews, without them.
        let warnings = spec
            .validate_for_create(now)
            .map(|(_, w)| w)
            .unwrap_or_default();
        let tz = zone(&spec);
        Ok(pb::PreviewScheduleResponse {
            firings: compiled
                .preview(from, count)
                .iter()
                .map(|f| convert::firing_out(f, tz))
                .collect(),
            warnings,
            tzdb_version: schedule::TZDB_VERSION.to_owned(),
        })
    }

    /// A manual firing placed by a node that does not own the job's shard: claimed
    /// under the shard owner's current epoch (a manual firing has an id of its own, so
    /// no scheduled firing can collide with it) and dispatched to the job's region,
    /// where the region's overlap policy applies as for any firing.
    async fn trigger_here(
        &self,
        job: &Job,
        shard: u32,
        override_overlap: bool,
        nonce: u64,
    ) -> Result<Run> {
        let Some(owner) = self.ctx.election.owner_of(shard).await? else {
            return Err(Error::NoOwner);
        };
        let now = self.ctx.clock.now();
        let run = Run::queued(
            firing_id(job.uid, now, Cause::Manual { nonce }),
            job.name.clone(),
            job.uid,
            now,
            now,
            Trigger::Manual { override_overlap },
            owner.epoch,
            now,
        );
        let claim = Claim {
            run: run.clone(),
            cursor: None,
        };
        self.ctx
            .runs
            .claim_in_shard(shard, owner.epoch, vec![claim])
            .await?;
        let back = self
            .ctx
            .queues
            .push(
                &job.name.region,
                vec![Dispatch {
                    run: run.clone(),
                    job: Arc::new(job.clone()),
                    epoch: owner.epoch,
                    shard,
                }],
            )
            .await?;
        if !back.is_empty() {
            // Claimed but the region's queue is full: the run stays queued in the log,
            // where the shard owner's next recovery finds it. Say so.
            return Err(Error::Owner(format!(
                "region {} queue is full; the run is recorded and will be dispatched by the next owner term",
                job.name.region
            )));
        }
        Ok(run)
    }

    async fn cluster_status(&self) -> Result<pb::ClusterStatus> {
        let mut out = pb::ClusterStatus {
            answered_by: self.ctx.node.to_string(),
            ..Default::default()
        };
        let Some(membership) = &self.ctx.membership else {
            out.mode = "embedded".into();
            let status = self.node_status().await?;
            out.regions = self
                .ctx
                .regions
                .iter()
                .map(|r| pb::ClusterRegion {
                    name: r.to_string(),
                    live: true,
                    nodes: vec![self.ctx.node.to_string()],
                })
                .collect();
            out.nodes = vec![pb::ClusterNode {
                node: self.ctx.node.to_string(),
                regions: status.regions.clone(),
                endpoint: String::new(),
                clock: status.clock.clone(),
            }];
            out.shards = vec![pb::ShardOwner {
                shard: 0,
                node: self.ctx.node.to_string(),
                epoch: status.epoch,
                lease_left: None,
            }];
            return Ok(out);
        };
        out.mode = "mesh".into();
        let mut nodes: std::collections::BTreeMap<String, pb::ClusterNode> = Default::default();
        for region in membership.live_regions().await? {
            let members = membership.members(&region).await?;
            out.regions.push(pb::ClusterRegion {
                name: region.to_string(),
                live: !members.is_empty(),
                nodes: members.iter().map(|m| m.node.to_string()).collect(),
            });
            for m in members {
                let n = nodes
                    .entry(m.node.to_string())
                    .or_insert_with(|| pb::ClusterNode {
                        node: m.node.to_string(),
                        regions: Vec::new(),
                        endpoint: m.endpoint.clone(),
                        clock: None,
                    });
                n.regions.push(region.to_string());
            }
        }
        // Regions this node serves but nobody hosts right now are shown as lost.
        for r in &self.ctx.regions {
            if !out.regions.iter().any(|x| x.name == r.as_str()) {
                out.regions.push(pb::ClusterRegion {
                    name: r.to_string(),
                    live: false,
                    nodes: Vec::new(),
                });
            }
        }
        out.regions.sort_by(|a, b| a.name.cmp(&b.name));
        out.nodes = nodes.into_values().collect();
        // Each node's clock, as it reports it (asked in parallel, briefly).
        let asks: Vec<_> = out
            .nodes
            .iter()
            .map(|n| {
                let me = n.node == self.ctx.node.as_str();
                let endpoint = n.endpoint.clone();
                let guard = self.ctx.guard.clone();
                tokio::spawn(async move {
                    if me {
                        return Some(convert::clock_out(&guard.status()));
                    }
                    peer_clock(&endpoint).await
                })
            })
            .collect();
        for (n, ask) in out.nodes.iter_mut().zip(asks) {
            n.clock = ask.await.ok().flatten();
        }
        for shard in 0..self.ctx.shards.max(1) {
            let owner = self.ctx.election.owner_of(shard).await?;
            out.shards.push(match owner {
                Some(o) => pb::ShardOwner {
                    shard,
                    node: o.node.to_string(),
                    epoch: o.epoch.0,
                    lease_left: o.lease_left.map(convert::duration_out),
                },
                None => pb::ShardOwner {
                    shard,
                    ..Default::default()
                },
            });
        }
        Ok(out)
    }

    async fn node_status(&self) -> Result<pb::NodeStatus> {
        match self
            .ctx
            .supervisor
            .call(NodeSupervisorMsg::Status, Some(CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(status)) => {
                let mut out =
                    convert::node_status_out(self.ctx.node.as_str(), &self.ctx.regions, &status);
                out.clock = Some(convert::clock_out(&self.ctx.guard.status()));
                Ok(out)
            }
            _ => Err(Error::Actor("the node supervisor did not answer".into())),
        }
    }
}

/// How long the cluster status waits for a peer's own status.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// A peer's clock guard status through its API (None if it does not answer in time).
async fn peer_clock(endpoint: &str) -> Option<pb::ClockStatus> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .ok()?
        .connect_timeout(PEER_STATUS_TIMEOUT)
        .timeout(PEER_STATUS_TIMEOUT);
    let channel = tokio::time::timeout(PEER_STATUS_TIMEOUT, channel.connect())
        .await
        .ok()?
        .ok()?;
    let mut client = pb::scheduler_client::SchedulerClient::new(channel);
    client
        .get_node_status(pb::GetNodeStatusRequest {})
        .await
        .ok()?
        .into_inner()
        .clock
}

fn answer<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for Service {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        answer(Service::create_job(self, request.into_inner()).await)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let r = async {
            let name = JobName::parse("name", &request.get_ref().name)?;
            let job = self.get(&name).await?;
            self.job_out(&job, Vec::new()).await
        };
        answer(r.await)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        answer(Service::list_jobs(self, request.into_inner()).await)
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        answer(Service::delete_job(self, request.into_inner()).await)
    }

    async fn pause_job(
        &self,
        request: Request<pb::PauseJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        answer(self.set_paused(&r.name, &r.etag, true).await)
    }

    async fn resume_job(
        &self,
        request: Request<pb::ResumeJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        answer(self.set_paused(&r.name, &r.etag, false).await)
    }

    async fn trigger_job(
        &self,
        request: Request<pb::TriggerJobRequest>,
    ) -> std::result::Result<Response<pb::Run>, Status> {
        answer(Service::trigger_job(self, request.into_inner()).await)
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> std::result::Result<Response<pb::ListRunsResponse>, Status> {
        answer(Service::list_runs(self, request.into_inner()).await)
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> std::result::Result<Response<pb::Run>, Status> {
        answer(Service::get_run(self, request.into_inner()).await)
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> std::result::Result<Response<pb::PreviewScheduleResponse>, Status> {
        answer(self.preview(request.into_inner()).await)
    }

    async fn get_node_status(
        &self,
        _request: Request<pb::GetNodeStatusRequest>,
    ) -> std::result::Result<Response<pb::NodeStatus>, Status> {
        answer(self.node_status().await)
    }

    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatus>, Status> {
        answer(self.cluster_status().await)
    }

    async fn get_time(
        &self,
        _request: Request<pb::GetTimeRequest>,
    ) -> std::result::Result<Response<pb::GetTimeResponse>, Status> {
        Ok(Response::new(pb::GetTimeResponse {
            now: Some(convert::timestamp_out(self.ctx.clock.now())),
            node: self.ctx.node.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_checked() {
        assert_eq!(
            parse_parent("parent", "regions/us-east").unwrap().0,
            "us-east"
        );
        for bad in ["", "regions/", "regions/US", "region/x", "regions/a/jobs/b"] {
            assert_eq!(
                parse_parent("parent", bad).unwrap_err().field,
                "parent",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn job_fields_are_prefixed_once() {
        let Error::Field(e) = in_job(FieldError::new("schedule.cron", "bad")) else {
            panic!()
        };
        assert_eq!(e.field, "job.schedule.cron");
        let Error::Field(e) = in_job(FieldError::new("job.name", "bad")) else {
            panic!()
        };
        assert_eq!(e.field, "job.name");
        let Error::Field(e) = in_job(FieldError::new("policy.spread.window", "bad")) else {
            panic!()
        };
        assert_eq!(e.field, "job.policy.spread_window");
    }

    #[test]
    fn trigger_memo_is_bounded() {
        let mut m = TriggerMemo::default();
        for i in 0..TRIGGER_REQUESTS_MAX + 5 {
            m.remember(
                format!("r{i}"),
                JobName::new("local", "a"),
                FiringId(Uuid::from_u128(i as u128)),
            );
        }
        assert_eq!(m.runs.len(), TRIGGER_REQUESTS_MAX);
        assert!(!m.runs.contains_key("r0"));
        assert!(
            m.runs
                .contains_key(&format!("r{}", TRIGGER_REQUESTS_MAX + 4))
        );
    }

    #[test]
    fn request_ids_are_bounded() {
        validate_request_id("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        assert!(validate_request_id(&"a".repeat(REQUEST_ID_LEN_MAX + 1)).is_err());
        assert!(validate_request_id("a b").is_err());
    }
}
