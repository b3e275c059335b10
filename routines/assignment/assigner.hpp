// The assignment decision, free of actors: which queued run goes to which
// agent. The assignment routine actor feeds it events and carries out its
// placements.
//
// Rules (issue "Mesh server core"):
// - A run may go only to an agent that is `online` (not draining, offline or
//   deregistered) and not held back (`agent_view::held`), lists the run's plan, matches
//   the run's selector AND its scope, is the run's target agent if one is named, and has
//   a free slot (capacity - reserved > 0).
// - Higher priority first, FIFO (by `seq`) within a priority.
// - No head-of-line blocking: a run nobody can take never blocks a run that
//   some agent can take.
// - Spread: among eligible agents pick the one with the most free slots; ties
//   go to the one assigned to least recently.
// - Concurrency keys: a run with a key waits while another run with the same
//   key and scope is placed (pending or running); the key is held from its
//   placement until its slot is released. A free key goes to its first
//   queued run (priority, then FIFO) only: a later run of the key waits
//   behind it even when another agent could take the later one.
//
// Runs are grouped into classes of identical (plan, selector, scope, target);
// eligibility is computed once per class and kept up to date as agents
// change, so a decision costs at most O(classes + agents of the plan) and
// never O(queued runs). A new class over many agents ranks them in steps
// (`rank_more`), best agents first, so its first run does not wait for the
// whole ranking. assigner.cpp lists the exact costs.
//
// Thread-safety: none; owned by the assignment routine actor.
#pragma once

#include "mesh/domain/records.hpp"
#include "mesh/domain/selector.hpp"

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace polymesh {

struct queued_run {
  std::string id;
  /// Its order within a priority: `queue_order` (a retry takes its first
  /// run's place).
  uint64_t seq = 0;
  int64_t priority = 0;
  std::string plan;
  selector sel;
  selector scope;
  /// Agent name ("" = any agent).
  std::string target_agent;
  /// "" = none; see `run_record::concurrency_key`.
  std::string concurrency_key;
};

struct agent_view {
  std::string id;
  std::string name;
  label_map labels;
  std::set<std::string> plans;
  int64_t capacity = 1;
  agent_status status = agent_status::online;
  /// Non-empty while the agent is held back (runs placed with it were not
  /// started, `agents.hold_back_max`): why, as explain says it. A held-back
  /// agent takes no run, like one that is not online.
  std::string held;
};

struct placement {
  std::string run_id;
  std::string agent_id;
};

/// Why one agent can or cannot take one run.
struct candidacy {
  std::string agent_id;
  std::string agent_name;
  bool candidate = false;
  /// "" when `candidate`; otherwise e.g. `offline`, `draining`,
  /// `lacks plan deploy`, `selector requirement env=prod not met`,
  /// `outside the token's scope (env=dev not met)`, `not the target agent`,
  /// `concurrency key K is held by run R`, `run R goes first with
  /// concurrency key K`, `no free slot (2 of 2 in use)`, or the agent's
  /// `agent_view::held`.
  std::string reason;
  /// For an agent that is not online or held back (that the reason): whether its
  /// plans, labels and name would let it take the run once online.
  bool fits = false;
};

class assigner {
public:
  /// How many agents a new class looks at per step: at enqueue, then per
  /// `rank_more`.
  static constexpr size_t default_rank_step = 128;
  explicit assigner(size_t rank_step = default_rank_step)
      : rank_step_{rank_step} {}
  // Not copyable: the indexes point into its own containers. Moving keeps
  // every node, pointer and iterator valid.
  assigner(const assigner&) = delete;
  assigner& operator=(const assigner&) = delete;
  assigner(assigner&&) = default;
  assigner& operator=(assigner&&) = default;

  /// Adds an agent or replaces its labels/plans/capacity/status; keeps its
  /// reserved slot count.
  void upsert_agent(agent_view agent);
  void remove_agent(const std::string& agent_id);
  /// Holds a known agent back (`why` non-empty, see `agent_view::held`) or
  /// lets it take runs again (`why` empty); keeps the rest of its view.
  void hold_back(const std::string& agent_id, std::string why);
  /// Marks one slot of `agent_id` in use (a pending or running run that the
  /// routine did not place itself, e.g. rebuilt at start-up).
  void reserve(const std::string& agent_id);
  /// Frees one slot of `agent_id` (never below zero).
  void release(const std::string& agent_id);
  /// Marks concurrency key `key` of scope `scope` held by `run_id`, a pending
  /// or running run that the routine did not place itself (start-up
  /// restore). Placing a run with a key holds it too.
  void hold(const std::string& run_id, const selector& scope, const std::string& key);
  /// Lets go of the key `run_id` holds, if any: its slot was released.
  void release_hold(const std::string& run_id);
  /// The run holding `key` of `scope`, or "" when it is free.
  [[nodiscard]] std::string holder(const selector& scope, const std::string& key) const;
  [[nodiscard]] int64_t reserved(const std::string& agent_id) const;
  /// A known agent's name; "" for an agent it does not know.
  [[nodiscard]] std::string name_of(const std::string& agent_id) const;

  /// Queues a run; a run already queued is replaced.
  void enqueue(queued_run run);
  /// Removes a run from the queue; returns false if it was not queued.
  bool dequeue(const std::string& run_id);
  [[nodiscard]] bool queued(const std::string& run_id) const;
  [[nodiscard]] size_t queue_size() const { return runs_.size(); }

  /// Whether a new class still has agents of its plan to look at. It looks
  /// at them best first, so until it is done its runs go to the best
  /// eligible agent among the best agents of the plan.
  [[nodiscard]] bool ranking() const { return !ranking_.empty(); }
  /// Looks at up to `rank_step` more agents for the classes still ranking.
  void rank_more();

  /// Assigns as many queued runs as free slots allow (at most `max`),
  /// reserving a slot for each and removing it from the queue.
  [[nodiscard]] std::vector<placement> place(size_t max = SIZE_MAX);

  /// For a queued run: every known agent and why it is or is not a candidate.
  /// Returns an empty vector when `run_id` is not queued.
  [[nodiscard]] std::vector<candidacy> explain(const std::string& run_id) const;
  /// For a queued run waiting for its concurrency key: the run holding it;
  /// "" otherwise.
  [[nodiscard]] std::string key_holder(const std::string& run_id) const;
  /// For a queued run whose concurrency key is free: the run of that key
  /// that goes first (the key goes in priority and submission order, also
  /// across selectors and plans), when it is another; "" otherwise.
  [[nodiscard]] std::string key_first(const std::string& run_id) const;

private:
  // Implementation-defined; see assigner.cpp for the invariants and costs.
  struct run_class;
  struct agent_entry {
    agent_view view;
    /// False for a placeholder that `reserve` created before the agent was
    /// upserted (start-up restore races the agent's own announcement).
    bool known = false;
    int64_t reserved = 0;
    /// `assignments_` at its last placement; 0 = never placed to.
    uint64_t last_assigned = 0;
    /// The classes it is statically eligible for (all but the slot rule), in
    /// no order. A vector: an agent is in few classes, and a set allocated
    /// twice per link, which made ranking a new class mostly malloc.
    std::vector<run_class*> classes;
    [[nodiscard]] int64_t free() const;
  };
  /// An agent's place in a class's preference order (see `rank_less`).
  struct agent_rank {
    int64_t free;
    uint64_t last_assigned;
    agent_entry* agent;
  };
  /// Where a class's ranking stands: every agent of its plan up to and
  /// including this rank has been looked at. A copy, not a pointer, so that
  /// the agent may go.
  struct rank_cursor {
    int64_t free;
    uint64_t last_assigned;
    std::string id;
  };
  struct rank_less {
    using is_transparent = void;
    bool operator()(const agent_rank& x, const agent_rank& y) const;
    bool operator()(const agent_rank& x, const rank_cursor& y) const;
    bool operator()(const rank_cursor& x, const agent_rank& y) const;
  };
  using rank_set = std::set<agent_rank, rank_less>;
  struct run_key {
    int64_t priority;
    uint64_t seq;
    std::string id;
    bool operator<(const run_key& other) const;
  };
  struct run_class {
    std::string key;
    std::string plan;
    selector sel;
    selector scope;
    std::string target_agent;
    std::string concurrency_key;
    /// `hold_key(scope, concurrency_key)`; "" for none.
    std::string hold;
    std::set<run_key> queue;
    /// Its statically eligible agents, best first.
    rank_set ranked;
    /// Whether it is in `ready_`, and under which head.
    bool is_ready = false;
    std::map<run_key, run_class*>::iterator ready_at;
    /// Its place in `idle_` while its queue is empty.
    std::list<run_class*>::iterator idle_at;
    /// Whether it is in `ranking_`, and how far it has looked (nowhere yet
    /// while empty).
    bool ranking = false;
    std::optional<rank_cursor> cursor;
  };

  [[nodiscard]] static agent_rank rank_of(agent_entry& agent);
  /// Whether `v`'s plans, name and labels let it take `cls`'s runs,
  /// whatever its status.
  [[nodiscard]] static bool fits(const agent_view& v, const run_class& cls);
  [[nodiscard]] static bool eligible(const agent_entry& agent, const run_class& cls);
  void link(agent_entry& agent, run_class& cls);
  /// Removes `cls` from `agent.classes` (not from `cls.ranked`).
  static void forget_class(agent_entry& agent, run_class& cls);
  void unlink(agent_entry& agent, run_class& cls);
  void attach(agent_entry& agent);
  void detach(agent_entry& agent);
  template <class F> void rerank(agent_entry& agent, F&& change);
  void sync_ready(run_class& cls);
  [[nodiscard]] static bool attached(const agent_entry& agent);
  [[nodiscard]] static bool looked_at(const run_class& cls, const agent_rank& rank);
  void rank_step(run_class& cls, size_t& budget);
  void drop_class(run_class& cls);
  void trim_idle();
  /// The key under which a concurrency key is held: keys of different scopes
  /// never wait for each other.
  [[nodiscard]] static std::string hold_key(const selector& scope,
                                            const std::string& key);
  [[nodiscard]] bool held(const run_class& cls) const;
  /// The first queued run with concurrency key `hold` (by priority, then
  /// submission), whose turn with the key it is; null for none.
  [[nodiscard]] const run_key* key_head(const std::string& hold) const;
  /// Whether `cls` has a key and its head is not the key's first run.
  [[nodiscard]] bool not_its_turn(const run_class& cls) const;
  /// `sync_ready` for `cls` after its queue changed, and for the other
  /// classes of its key, whose turn may have changed with it.
  void sync_queue(run_class& cls);
  void hold(const std::string& run_id, std::string hold);
  void sync_hold(const std::string& hold);

  std::unordered_map<std::string, agent_entry> agents_;
  std::unordered_map<std::string, run_class> classes_;
  /// run id -> (its class, its queue key)
  std::unordered_map<std::string, std::pair<run_class*, run_key>> runs_;
  /// Classes with a queued run and an eligible agent with a free slot, by
  /// their head run: `place` takes from the front.
  std::map<run_key, run_class*> ready_;
  /// plan -> online agents listing it, best first (as in a class).
  std::unordered_map<std::string, rank_set> plan_agents_;
  /// name -> online agents of that name (for classes with a target).
  std::unordered_map<std::string, std::unordered_set<agent_entry*>> name_agents_;
  /// plan -> its classes (with or without queued runs).
  std::unordered_map<std::string, std::unordered_set<run_class*>> plan_classes_;
  /// Classes with an empty queue, least recently emptied first. They are kept
  /// so that a steady kind of run does not rebuild its class every time;
  /// `trim_idle` bounds their number.
  std::list<run_class*> idle_;
  /// Classes still looking at the agents of their plan, oldest first.
  std::deque<run_class*> ranking_;
  /// Held concurrency key (`hold_key`) -> the runs holding it (one, but for
  /// a store that had two at start-up).
  std::unordered_map<std::string, std::vector<std::string>> holders_;
  /// run id -> the concurrency key it holds.
  std::unordered_map<std::string, std::string> held_by_;
  /// `hold_key` -> the classes of runs with it.
  std::unordered_map<std::string, std::unordered_set<run_class*>> hold_classes_;
  size_t rank_step_;
  uint64_t assignments_ = 0;
};

} // namespace polymesh
