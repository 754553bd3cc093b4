//! Local election for embedded mode: this node owns everything, and its epoch is the
//! store's persisted counter, bumped at every start, so writes from a previous
//! incarnation can be told apart. Must not talk to the network.

use async_trait::async_trait;

use super::Store;
use crate::core::ids::NodeId;
use crate::ports::{Election, Result, ShardOwner, Term};

pub struct LocalElection {
    store: Store,
}

impl LocalElection {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Election for LocalElection {
    async fn campaign(&self, _node: &NodeId, _shard: u32) -> Result<Term> {
        let epoch = self.store.bump_epoch().await?;
        Ok(Term::unbounded(epoch))
    }

    /// One node owns everything: there is nobody to hand a shard to.
    async fn resign(&self, _shard: u32) -> Result<()> {
        Ok(())
    }

    async fn owner_of(&self, _shard: u32) -> Result<Option<ShardOwner>> {
        Ok(None)
    }
}
