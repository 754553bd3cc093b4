//! Adapters: one implementation of the ports per technology. `embedded` is the
//! single-process store (redb + in-process queues + local election); `clock` is the
//! only place that reads the system clock. Adapters must not make scheduling
//! decisions: those live in `core` and the actors.

pub mod clock;
pub mod embedded;
pub mod etcd;
pub mod instant;
pub mod redis;
pub mod sim;

/// The production executors behind the `Executor` port.
#[async_trait::async_trait]
impl crate::ports::Executor for crate::exec::Executors {
    async fn execute(
        &self,
        action: &crate::core::action::Action,
        attempt: &crate::exec::Attempt<'_>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> crate::exec::Outcome {
        crate::exec::Executors::execute(self, action, attempt, cancel).await
    }
}
