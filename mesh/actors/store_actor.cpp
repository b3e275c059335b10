#include "mesh/actors/store_actor.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <chrono>
#include <optional>

namespace polymesh {

namespace {

/// How often meshd records that it runs (`stamp_alive`): after a crash, the
/// next start takes tokens that expired in the last interval before it for
/// ones that expired while meshd was down. A busy store adds the stamp to a
/// commit it makes anyway; an idle one commits it alone.
constexpr auto alive_stamp_interval = std::chrono::seconds{10};

/// While commits keep failing, how often the log says so again.
constexpr auto failure_log_interval = std::chrono::seconds{60};

using stamp_atom = caf::atom_constant<caf::atom("stamp")>;

/// What the log has said of failed commits: the first of a run of failures
/// is logged, then one line a `failure_log_interval` with how many more
/// failed, and a line when a commit succeeds again.
struct failure_log {
  /// Commits failed since the last one that succeeded.
  size_t failed = 0;
  /// Of those, how many the log has not counted yet.
  size_t unlogged = 0;
  /// When the last line was written (meshd's clock).
  timestamp logged_at{};
};

struct store_state {
  static inline const char* name = "store";
  context_ptr ctx;
  std::shared_ptr<store> db;
  size_t group_commit_max = 4096;
  /// The writes of every request waiting for the next commit, in order.
  write_batch batch;
  /// One promise per waiting request and how many writes of `batch` are its.
  std::vector<std::pair<caf::response_promise, size_t>> waiting;
  bool flush_scheduled = false;
  /// When the last `stamp_alive` was committed (meshd's clock); none yet.
  std::optional<timestamp> stamped_at;
  failure_log failures;
};

using self_ptr = caf::stateful_actor<store_state>*;

/// Whether a `stamp_alive` is due: none yet, or the last is an interval old
/// (or meshd's clock reads earlier than it, which a jump at start can do).
bool stamp_due(const store_state& st, timestamp now) {
  return !st.stamped_at || now < *st.stamped_at ||
         now - *st.stamped_at >= alive_stamp_interval;
}

/// Counts a commit of `writes` requested writes, begun at `began`, in the
/// store's metrics, and its outcome `out` for `/readyz`.
template <class T>
void account_commit(store_state& st, size_t writes,
                    std::chrono::steady_clock::time_point began,
                    const caf::expected<T>& out) {
  st.ctx->metrics.committed(writes, std::chrono::steady_clock::now() - began,
                            static_cast<bool>(out));
  auto& log_of = st.failures;
  if (out) {
    st.ctx->store_status.commit_succeeded();
    if (log_of.failed > 0)
      log(log_level::info, "store: commits succeed again, after " +
                               std::to_string(log_of.failed) + " failed");
    log_of = failure_log{};
    return;
  }
  auto why = message_of(out.error());
  st.ctx->store_status.commit_failed(why);
  auto now = st.ctx->now();
  ++log_of.failed;
  ++log_of.unlogged;
  if (log_of.failed == 1) {
    log(log_level::error, "store: a commit failed (writes are answered 500 "
                          "store_failure, and /readyz 503, until one succeeds): " +
                              why);
  } else if (now - log_of.logged_at >= failure_log_interval || now < log_of.logged_at) {
    log(log_level::error, "store: " + std::to_string(log_of.unlogged) +
                              " more commits failed (" + std::to_string(log_of.failed) +
                              " in a row), the last: " + why);
  } else {
    return;
  }
  log_of.unlogged = 0;
  log_of.logged_at = now;
}

/// Commits a `stamp_alive` on its own. Like a prune, it counts as a commit
/// (of no write) and its outcome shows in `/readyz`: an idle mesh whose disk
/// failed says so, and counts the failure.
void stamp_alone(self_ptr self) {
  auto& st = self->state;
  auto now = st.ctx->now();
  auto began = std::chrono::steady_clock::now();
  auto done = st.db->apply(write_batch{stamp_alive{now}});
  account_commit(st, 0, began, done);
  if (done) st.stamped_at = now;
}

void commit(self_ptr self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.waiting.empty()) return;
  auto batch = std::move(st.batch);
  auto waiting = std::move(st.waiting);
  st.batch.clear();
  st.waiting.clear();
  // The stamp goes last, after every requester's writes: their outcomes
  // are the first ones, in order.
  auto now = st.ctx->now();
  bool stamping = stamp_due(st, now);
  if (stamping) batch.emplace_back(stamp_alive{now});
  auto began = std::chrono::steady_clock::now();
  auto outcomes = st.db->apply(batch);
  account_commit(st, batch.size() - (stamping ? 1 : 0), began, outcomes);
  if (outcomes && stamping) st.stamped_at = now;
  size_t offset = 0;
  for (auto& [promise, n] : waiting) {
    if (!outcomes) {
      promise.deliver(outcomes.error());
      continue;
    }
    write_outcomes mine(outcomes->begin() + static_cast<ptrdiff_t>(offset),
                        outcomes->begin() + static_cast<ptrdiff_t>(offset + n));
    offset += n;
    promise.deliver(std::move(mine));
  }
}

caf::behavior store_actor(self_ptr self, context_ptr ctx, std::shared_ptr<store> db,
                          size_t group_commit_max) {
  self->state.ctx = std::move(ctx);
  self->state.db = std::move(db);
  self->state.group_commit_max = group_commit_max;
  // At shutdown every actor is told to exit at once. A write taken in just
  // before has its commit queued as a `flush` behind the exit, and CAF 0.17
  // drops an unanswered promise without a word: its requester would wait
  // for ever, and so would shutdown. Commit what waits, then go.
  // The last stamp of a clean stop is the time it stopped.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    commit(self);
    stamp_alone(self);
    self->quit(msg.reason);
  });
  self->send(self, stamp_atom::value);
  return {
      [=](write_atom, write_batch& writes) -> caf::result<write_outcomes> {
        auto& st = self->state;
        auto promise = self->make_response_promise();
        auto n = writes.size();
        for (auto& w : writes)
          st.batch.push_back(std::move(w));
        st.waiting.emplace_back(promise, n);
        if (st.batch.size() >= st.group_commit_max) {
          commit(self);
        } else if (!st.flush_scheduled) {
          // The flush message queues behind every request already in the
          // mailbox, so all of them join this transaction.
          st.flush_scheduled = true;
          self->send(self, flush_atom::value);
        }
        return caf::delegated<write_outcomes>{};
      },
      [=](flush_atom) { commit(self); },
      [=](stamp_atom) {
        auto& st = self->state;
        // Writes waiting for their flush take the stamp along.
        if (st.waiting.empty() && stamp_due(st, st.ctx->now())) stamp_alone(self);
        if (!st.ctx->stopping)
          self->delayed_send(self, alive_stamp_interval, stamp_atom::value);
      },
      [=](prune_atom, timestamp cutoff, size_t max_rows) -> caf::result<size_t> {
        commit(self);
        auto& st = self->state;
        auto began = std::chrono::steady_clock::now();
        auto n = st.db->prune(cutoff, max_rows);
        // A prune is a commit too: one that fails (a full disk) shows in
        // `/readyz` and the store's metrics, also on a mesh that takes no
        // other write; one that deleted nothing wrote nothing, and says
        // nothing of the disk.
        if (!n || *n > 0) account_commit(st, 0, began, n);
        if (!n) return n.error();
        return *n;
      },
  };
}

} // namespace

caf::actor spawn_store_actor(caf::actor_system& sys, context_ptr ctx,
                             std::unique_ptr<store> db, size_t group_commit_max) {
  return sys.spawn<caf::detached>(store_actor, std::move(ctx),
                                  std::shared_ptr<store>{std::move(db)},
                                  group_commit_max);
}

} // namespace polymesh
