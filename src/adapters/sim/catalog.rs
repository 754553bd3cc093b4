//! The simulated catalog: one job store for the whole world, as etcd holds it (the
//! rules of `adapters/etcd/catalog.rs`): create with request-id idempotency, get,
//! listing by (create time, `region/job`) strictly after a cursor with a region filter,
//! conditional update through `Job::replacing`, delete, and a watch per node: a bounded
//! broadcast of changes in commit order, held back while the node cannot hear etcd and
//! closed when its incarnation crashes.
//!
//! Runs and cursors are the run log's (deleting a job here leaves them, as in mesh
//! mode). Must not interpret jobs beyond name, uid, revision and create time, and must
//! not iterate anything but B-trees.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Ctx, Link, State};
use crate::core::Timestamp;
use crate::core::ids::{JobName, RegionId};
use crate::core::job::Job;
use crate::ports::{CatalogEvent, Error, JobCursor, JobFilter, Result};

/// `region/job`: the order etcd's index keys give names within one instant.
fn name_key(n: &JobName) -> String {
    format!("{}/{}", n.region, n.job)
}

#[derive(Default)]
pub(crate) struct Store {
    jobs: BTreeMap<JobName, Job>,
    /// Every job by (create time, `region/job`).
    order_all: BTreeSet<(Timestamp, String, JobName)>,
    /// Jobs of one region by (region, create time, job id).
    order_in: BTreeSet<(RegionId, Timestamp, String, JobName)>,
    /// request id -> the job its create made (name, uid). Kept forever, as etcd does.
    requests: BTreeMap<String, (JobName, Uuid)>,
}

impl Store {
    fn create(&mut self, job: Job, request_id: Option<String>) -> Result<(Job, bool)> {
        if let Some(rid) = &request_id
            && let Some((name, uid)) = self.requests.get(rid)
        {
            return match self.jobs.get(name) {
                Some(j) if j.name == job.name && j.uid == *uid => Ok((j.clone(), false)),
                _ => Err(Error::Conflict(
                    "request_id was used for another job".to_string(),
                )),
            };
        }
        if self.jobs.contains_key(&job.name) {
            return Err(Error::AlreadyExists(job.name.to_string()));
        }
        if let Some(rid) = request_id {
            self.requests.insert(rid, (job.name.clone(), job.uid));
        }
        self.index(&job, true);
        self.jobs.insert(job.name.clone(), job.clone());
        Ok((job, true))
    }

    fn index(&mut self, job: &Job, add: bool) {
        let n = &job.name;
        let all = (job.create_time, name_key(n), n.clone());
        let within = (
            n.region.clone(),
            job.create_time,
            n.job.as_str().to_owned(),
            n.clone(),
        );
        if add {
            self.order_all.insert(all);
            self.order_in.insert(within);
        } else {
            self.order_all.remove(&all);
            self.order_in.remove(&within);
        }
    }

    fn list(&self, filter: &JobFilter, after: Option<JobCursor>, limit: usize) -> Vec<Job> {
        let names: Vec<&JobName> = match &filter.region {
            None => {
                let lo = match after {
                    Some((t, n)) => std::ops::Bound::Excluded((t, name_key(&n), n)),
                    None => std::ops::Bound::Unbounded,
                };
                self.order_all
                    .range((lo, std::ops::Bound::Unbounded))
                    .take(limit)
                    .map(|k| &k.2)
                    .collect()
            }
            Some(r) => {
                let lo = match &after {
                    Some((t, n)) => std::ops::Bound::Excluded((
                        r.clone(),
                        *t,
                        n.job.as_str().to_owned(),
                        JobName::new(r.as_str(), n.job.as_str()),
                    )),
                    None => std::ops::Bound::Unbounded,
                };
                self.order_in
                    .range((lo, std::ops::Bound::Unbounded))
                    .skip_while(|k| &k.0 < r)
                    .take_while(|k| &k.0 == r)
                    .take(limit)
                    .map(|k| &k.3)
                    .collect()
            }
        };
        names
            .into_iter()
            .filter_map(|n| self.jobs.get(n).cloned())
            .collect()
    }

    fn update(&mut self, job: Job, expected_revision: Option<u64>) -> Result<Job> {
        let Some(current) = self.jobs.get(&job.name) else {
            return Err(Error::NotFound(job.name.to_string()));
        };
        let next = job
            .replacing(current, expected_revision)
            .map_err(Error::Conflict)?;
        self.jobs.insert(next.name.clone(), next.clone());
        Ok(next)
    }

    fn delete(&mut self, name: &JobName) -> Result<Job> {
        let Some(job) = self.jobs.remove(name) else {
            return Err(Error::NotFound(name.to_string()));
        };
        self.index(&job, false);
        Ok(job)
    }

    fn all(&self) -> Vec<Job> {
        self.order_all
            .iter()
            .filter_map(|k| self.jobs.get(&k.2).cloned())
            .collect()
    }
}

/// One node's handle on the catalog.
pub(crate) struct SimCatalog {
    ctx: Ctx,
}

impl SimCatalog {
    pub(crate) fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    async fn call<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        self.ctx.call(Link::Etcd, f).await
    }
}

#[async_trait]
impl crate::ports::Catalog for SimCatalog {
    async fn create_job(&self, job: Job, request_id: Option<String>) -> Result<Job> {
        self.call(move |st| {
            let (job, new) = st.catalog.create(job, request_id)?;
            if new {
                st.next_revision();
                st.publish(CatalogEvent::Upserted(std::sync::Arc::new(job.clone())));
            }
            Ok(job)
        })
        .await
    }

    async fn get_job(&self, name: &JobName) -> Result<Option<Job>> {
        self.call(|st| Ok(st.catalog.jobs.get(name).cloned())).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobCursor>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.call(|st| Ok(st.catalog.list(filter, after, limit)))
            .await
    }

    async fn update_job(&self, job: Job, expected_revision: Option<u64>) -> Result<Job> {
        self.call(move |st| {
            let job = st.catalog.update(job, expected_revision)?;
            st.next_revision();
            st.publish(CatalogEvent::Upserted(std::sync::Arc::new(job.clone())));
            Ok(job)
        })
        .await
    }

    async fn delete_job(&self, name: &JobName) -> Result<Job> {
        self.call(|st| {
            let job = st.catalog.delete(name)?;
            st.next_revision();
            st.publish(CatalogEvent::Deleted {
                name: job.name.clone(),
                uid: job.uid,
            });
            Ok(job)
        })
        .await
    }

    async fn all_jobs(&self) -> Result<Vec<Job>> {
        self.call(|st| Ok(st.catalog.all())).await
    }

    fn watch(&self) -> broadcast::Receiver<CatalogEvent> {
        let st = self.ctx.world.lock();
        match st.nodes.get(&self.ctx.node) {
            Some(n) if n.alive && n.incarnation == self.ctx.incarnation => n.watch.subscribe(),
            // A crashed incarnation's watch is closed.
            _ => broadcast::channel(1).1,
        }
    }
}
