#include "routines/assignment/assigner.hpp"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

// How it works
// ------------
// Runs are grouped into classes of identical (plan, selector, scope, target).
// Each class keeps, besides its queue, the set of agents that are statically
// eligible for it (online, list the plan, match selector and scope, are the
// target) ranked best first: most free slots, then least recently assigned,
// then id. Each agent knows the classes it is ranked in, so a change of its
// free slots re-ranks it in those classes only.
//
// `ready_` holds exactly the classes that have a queued run and whose best
// agent has a free slot, ordered by their head run (priority desc, seq asc).
// `place` therefore never looks at a class it cannot serve: it takes the
// front class, gives its head run to that class's best agent and repeats.
// A run nobody can take sits in a class that is not ready, so it never
// blocks one that can be taken (no head-of-line blocking).
//
// Costs, with C the number of classes, E the online agents of a plan, M the
// classes one agent is ranked in (at most the classes of its plans) and n the
// queued runs:
// - `place`: O(M log(C + E) + log n) per placement; O(1) when nothing is
//   placeable, whatever the queue length.
// - `reserve`, `release`: O(M log(C + E)).
// - `enqueue`, `dequeue`: O(log n) for an existing class. A new class that
//   names a target agent matches the agents of that name at once. Any other
//   new class walks its plan's online agents best first, `rank_step` (S) of
//   them at enqueue and S per `rank_more` (the routine sends itself one
//   message per step, so other work goes in between): O(S log E) selector
//   matches and links per step, O(E) in all. Matching and ranking 10,000
//   agents at once costs tens of milliseconds in meshd, which held every
//   placement up behind the first run of a new kind. Until the walk ends
//   the class places to the best eligible agent among those walked, which
//   are the best of the plan: the walk's cursor is a rank, and an agent
//   whose rank moves from ahead of the cursor to behind it is matched then.
// - Agents' ranks are also kept per plan (`plan_agents_`), so `reserve`,
//   `release` and `place` update one more set per plan of the agent.
// - `upsert_agent`: O(M log(C + E)) when only the capacity changed; a change
//   of labels, plans, status, name or hold re-matches the agent against the classes
//   of its plans, O(C) selector matches.
// - `explain`: O(A log A) over all known agents A; it is a diagnostic.
//
// Concurrency keys are part of a class, so a held key makes whole classes
// not ready: `place` still never looks at a run it cannot place. A free key
// makes ready only the class whose head is the key's first run. Holding or
// freeing a key, and a change of the head of a class with a key, re-check
// the classes with it, O(K²) for K classes of the key (usually one).
//
// Classes whose queue runs empty are kept (a steady kind of run would
// otherwise rebuild its class for every run); beyond `max_idle` of them the
// least recently emptied are dropped.

namespace polymesh {

namespace {

// Idle classes still cost: each is re-ranked when a slot of one of its agents
// changes. A mesh has few distinct kinds of run; one-off kinds (a target
// agent, an unusual selector) age out.
constexpr size_t max_idle = 1024;

std::string class_key(const queued_run& run) {
  // '\0' occurs in no plan name, canonical selector or agent name, so the
  // parts cannot run into each other. The canonical selector text makes
  // equivalent selectors written differently share a class.
  std::string key = run.plan;
  key += '\0';
  key += run.sel.to_string();
  key += '\0';
  key += run.scope.to_string();
  key += '\0';
  key += run.target_agent;
  key += '\0';
  key += run.concurrency_key;
  return key;
}

} // namespace

// -- ordering -----------------------------------------------------------------

int64_t assigner::agent_entry::free() const {
  // A capacity lowered below the slots in use leaves no free slot, not a
  // negative number that would rank below agents that are merely full.
  return std::max<int64_t>(0, view.capacity - reserved);
}

namespace {

bool rank_before(int64_t x_free, uint64_t x_last, const std::string& x_id, int64_t y_free,
                 uint64_t y_last, const std::string& y_id) {
  if (x_free != y_free) return x_free > y_free;
  if (x_last != y_last) return x_last < y_last;
  // The id never changes while the agent is ranked; it makes ties
  // deterministic.
  return x_id < y_id;
}

} // namespace

bool assigner::rank_less::operator()(const agent_rank& x, const agent_rank& y) const {
  return rank_before(x.free, x.last_assigned, x.agent->view.id, y.free, y.last_assigned,
                     y.agent->view.id);
}

bool assigner::rank_less::operator()(const agent_rank& x, const rank_cursor& y) const {
  return rank_before(x.free, x.last_assigned, x.agent->view.id, y.free, y.last_assigned,
                     y.id);
}

bool assigner::rank_less::operator()(const rank_cursor& x, const agent_rank& y) const {
  return rank_before(x.free, x.last_assigned, x.id, y.free, y.last_assigned,
                     y.agent->view.id);
}

bool assigner::run_key::operator<(const run_key& other) const {
  if (priority != other.priority) return priority > other.priority;
  if (seq != other.seq) return seq < other.seq;
  return id < other.id;
}

assigner::agent_rank assigner::rank_of(agent_entry& agent) {
  return {agent.free(), agent.last_assigned, &agent};
}

bool assigner::fits(const agent_view& v, const run_class& cls) {
  return v.plans.count(cls.plan) > 0 &&
         (cls.target_agent.empty() || cls.target_agent == v.name) &&
         cls.sel.matches(v.labels) && cls.scope.matches(v.labels);
}

bool assigner::eligible(const agent_entry& agent, const run_class& cls) {
  return attached(agent) && fits(agent.view, cls);
}

// -- index maintenance --------------------------------------------------------

void assigner::sync_ready(run_class& cls) {
  bool want = !cls.queue.empty() && !cls.ranked.empty() && cls.ranked.begin()->free > 0 &&
              !held(cls) && !not_its_turn(cls);
  if (cls.is_ready) {
    const auto& at = cls.ready_at->first;
    const auto& head = *cls.queue.begin();
    if (want && !(at < head) && !(head < at)) return;
    ready_.erase(cls.ready_at);
    cls.is_ready = false;
  }
  if (want) {
    cls.ready_at = ready_.emplace(*cls.queue.begin(), &cls).first;
    cls.is_ready = true;
  }
}

bool assigner::attached(const agent_entry& agent) {
  return agent.known && agent.view.status == agent_status::online &&
         agent.view.held.empty();
}

bool assigner::looked_at(const run_class& cls, const agent_rank& rank) {
  return cls.cursor && !rank_less{}(*cls.cursor, rank);
}

void assigner::forget_class(agent_entry& agent, run_class& cls) {
  auto& classes = agent.classes;
  if (auto it = std::find(classes.begin(), classes.end(), &cls); it != classes.end()) {
    *it = classes.back();
    classes.pop_back();
  }
}

void assigner::link(agent_entry& agent, run_class& cls) {
  // A ranking class meets an agent again when it came online after the
  // class was made, or moved ahead of its cursor after being walked.
  auto& classes = agent.classes;
  if (std::find(classes.begin(), classes.end(), &cls) != classes.end()) return;
  classes.push_back(&cls);
  cls.ranked.insert(rank_of(agent));
  sync_ready(cls);
}

void assigner::unlink(agent_entry& agent, run_class& cls) {
  cls.ranked.erase(rank_of(agent));
  forget_class(agent, cls);
  sync_ready(cls);
}

void assigner::attach(agent_entry& agent) {
  if (!attached(agent)) return;
  name_agents_[agent.view.name].insert(&agent);
  for (const auto& plan : agent.view.plans) {
    plan_agents_[plan].insert(rank_of(agent));
    if (auto it = plan_classes_.find(plan); it != plan_classes_.end())
      for (auto* cls : it->second)
        if (eligible(agent, *cls)) link(agent, *cls);
  }
}

void assigner::detach(agent_entry& agent) {
  auto classes = agent.classes;
  for (auto* cls : classes)
    unlink(agent, *cls);
  if (!attached(agent)) return;
  for (const auto& plan : agent.view.plans) {
    if (auto it = plan_agents_.find(plan); it != plan_agents_.end()) {
      it->second.erase(rank_of(agent));
      if (it->second.empty()) plan_agents_.erase(it);
    }
  }
  if (auto it = name_agents_.find(agent.view.name); it != name_agents_.end()) {
    it->second.erase(&agent);
    if (it->second.empty()) name_agents_.erase(it);
  }
}

template <class F> void assigner::rerank(agent_entry& agent, F&& change) {
  // A rank is a copy of the agent's free slots and last assignment, so the
  // stale copy still finds itself in each class after `change`.
  auto before = rank_of(agent);
  change();
  auto after = rank_of(agent);
  if (before.free == after.free && before.last_assigned == after.last_assigned) return;
  for (auto* cls : agent.classes) {
    // Moving the node avoids an allocation per class.
    if (auto node = cls->ranked.extract(before)) {
      node.value() = after;
      cls->ranked.insert(std::move(node));
    }
    sync_ready(*cls);
  }
  if (!attached(agent)) return;
  for (const auto& plan : agent.view.plans) {
    auto order = plan_agents_.find(plan);
    if (order == plan_agents_.end()) continue;
    if (auto node = order->second.extract(before)) {
      node.value() = after;
      order->second.insert(std::move(node));
    }
  }
  // A walk never meets an agent that moved from ahead of its cursor to
  // behind it.
  for (auto* cls : ranking_)
    if (!looked_at(*cls, before) && looked_at(*cls, after) && eligible(agent, *cls))
      link(agent, *cls);
}

void assigner::drop_class(run_class& cls) {
  if (cls.ranking) {
    cls.ranking = false;
    ranking_.erase(std::find(ranking_.begin(), ranking_.end(), &cls));
  }
  for (const auto& rank : cls.ranked)
    forget_class(*rank.agent, cls);
  cls.ranked.clear();
  if (cls.is_ready) {
    ready_.erase(cls.ready_at);
    cls.is_ready = false;
  }
  if (auto it = plan_classes_.find(cls.plan); it != plan_classes_.end()) {
    it->second.erase(&cls);
    if (it->second.empty()) plan_classes_.erase(it);
  }
  if (auto it = hold_classes_.find(cls.hold); it != hold_classes_.end()) {
    it->second.erase(&cls);
    if (it->second.empty()) hold_classes_.erase(it);
  }
}

void assigner::trim_idle() {
  while (idle_.size() > max_idle) {
    auto& cls = *idle_.front();
    idle_.pop_front();
    drop_class(cls);
    // A copy: the key must outlive the element it is erasing.
    classes_.erase(std::string{cls.key});
  }
}

// -- agents -------------------------------------------------------------------

void assigner::upsert_agent(agent_view agent) {
  auto& entry = agents_[agent.id];
  const auto& old = entry.view;
  if (entry.known && old.name == agent.name && old.labels == agent.labels &&
      old.plans == agent.plans && old.status == agent.status &&
      old.held.empty() == agent.held.empty()) {
    // Only the capacity (or nothing) changed: eligibility stands.
    rerank(entry, [&] { entry.view = std::move(agent); });
    return;
  }
  detach(entry);
  entry.view = std::move(agent);
  entry.known = true;
  attach(entry);
}

void assigner::hold_back(const std::string& agent_id, std::string why) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end() || !it->second.known) return;
  auto view = it->second.view;
  view.held = std::move(why);
  upsert_agent(std::move(view));
}

void assigner::remove_agent(const std::string& agent_id) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return;
  detach(it->second);
  agents_.erase(it);
}

void assigner::reserve(const std::string& agent_id) {
  // An unknown agent gets a placeholder that keeps the count until it is
  // upserted: at start-up its runs may be restored before it announces itself.
  auto& entry = agents_[agent_id];
  if (!entry.known) entry.view.id = agent_id;
  rerank(entry, [&] { ++entry.reserved; });
}

void assigner::release(const std::string& agent_id) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return;
  auto& entry = it->second;
  rerank(entry, [&] {
    if (entry.reserved > 0) --entry.reserved;
  });
  if (!entry.known && entry.reserved == 0) agents_.erase(it);
}

int64_t assigner::reserved(const std::string& agent_id) const {
  auto it = agents_.find(agent_id);
  return it == agents_.end() ? 0 : it->second.reserved;
}

std::string assigner::name_of(const std::string& agent_id) const {
  auto it = agents_.find(agent_id);
  return it == agents_.end() || !it->second.known ? std::string{} : it->second.view.name;
}

// -- runs ---------------------------------------------------------------------

void assigner::enqueue(queued_run run) {
  dequeue(run.id);
  auto key = class_key(run);
  auto [it, fresh] = classes_.try_emplace(key);
  auto& cls = it->second;
  if (fresh) {
    cls.key = std::move(key);
    cls.plan = run.plan;
    cls.sel = std::move(run.sel);
    cls.scope = std::move(run.scope);
    cls.target_agent = std::move(run.target_agent);
    cls.concurrency_key = std::move(run.concurrency_key);
    cls.hold = hold_key(cls.scope, cls.concurrency_key);
    plan_classes_[cls.plan].insert(&cls);
    if (!cls.hold.empty()) hold_classes_[cls.hold].insert(&cls);
    if (!cls.target_agent.empty()) {
      // A target narrows the candidates to (usually) one agent.
      if (auto agents = name_agents_.find(cls.target_agent); agents != name_agents_.end())
        for (auto* agent : agents->second)
          if (eligible(*agent, cls)) link(*agent, cls);
    } else {
      cls.ranking = true;
      size_t budget = rank_step_;
      rank_step(cls, budget);
      if (cls.ranking) ranking_.push_back(&cls);
    }
  } else if (cls.queue.empty()) {
    idle_.erase(cls.idle_at);
  }
  run_key rk{run.priority, run.seq, run.id};
  cls.queue.insert(rk);
  runs_.emplace(std::move(run.id), std::make_pair(&cls, std::move(rk)));
  sync_queue(cls);
}

void assigner::rank_step(run_class& cls, size_t& budget) {
  auto agents = plan_agents_.find(cls.plan);
  if (agents == plan_agents_.end()) {
    cls.ranking = false;
    return;
  }
  auto& order = agents->second;
  auto it = cls.cursor ? order.upper_bound(*cls.cursor) : order.begin();
  const agent_rank* last = nullptr;
  for (; budget > 0 && it != order.end(); ++it, --budget) {
    // Linking changes no rank, so `it` stays valid.
    if (eligible(*it->agent, cls)) link(*it->agent, cls);
    last = &*it;
  }
  if (last)
    cls.cursor = rank_cursor{last->free, last->last_assigned, last->agent->view.id};
  if (it == order.end()) cls.ranking = false;
}

void assigner::rank_more() {
  size_t budget = rank_step_;
  while (budget > 0 && !ranking_.empty()) {
    auto& cls = *ranking_.front();
    rank_step(cls, budget);
    if (!cls.ranking) ranking_.pop_front();
  }
}

bool assigner::dequeue(const std::string& run_id) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return false;
  auto& cls = *it->second.first;
  cls.queue.erase(it->second.second);
  runs_.erase(it);
  sync_queue(cls);
  if (cls.queue.empty()) {
    cls.idle_at = idle_.insert(idle_.end(), &cls);
    trim_idle();
  }
  return true;
}

bool assigner::queued(const std::string& run_id) const {
  return runs_.count(run_id) > 0;
}

std::vector<placement> assigner::place(size_t max) {
  std::vector<placement> result;
  while (result.size() < max && !ready_.empty()) {
    // The front class has the highest head among the classes that can be
    // served, and being ready means its best agent has a free slot.
    auto& cls = *ready_.begin()->second;
    auto& agent = *cls.ranked.begin()->agent;
    auto run_id = cls.queue.begin()->id;
    // A copy: `dequeue` may drop the class.
    auto key = cls.hold;
    result.push_back(placement{run_id, agent.view.id});
    rerank(agent, [&] {
      ++agent.reserved;
      agent.last_assigned = ++assignments_;
    });
    dequeue(run_id);
    if (!key.empty()) hold(run_id, std::move(key));
  }
  return result;
}

// -- concurrency keys ---------------------------------------------------------

std::string assigner::hold_key(const selector& scope, const std::string& key) {
  if (key.empty()) return {};
  // '\0' occurs in no canonical selector.
  return scope.to_string() + '\0' + key;
}

bool assigner::held(const run_class& cls) const {
  return !cls.hold.empty() && holders_.count(cls.hold) > 0;
}

const assigner::run_key* assigner::key_head(const std::string& hold) const {
  auto classes = hold_classes_.find(hold);
  if (classes == hold_classes_.end()) return nullptr;
  const run_key* first = nullptr;
  for (const auto* cls : classes->second)
    if (!cls->queue.empty() && (!first || *cls->queue.begin() < *first))
      first = &*cls->queue.begin();
  return first;
}

bool assigner::not_its_turn(const run_class& cls) const {
  if (cls.hold.empty() || cls.queue.empty()) return false;
  return key_head(cls.hold) != &*cls.queue.begin();
}

void assigner::sync_queue(run_class& cls) {
  if (cls.hold.empty())
    sync_ready(cls);
  else
    sync_hold(cls.hold);
}

void assigner::sync_hold(const std::string& hold) {
  if (auto it = hold_classes_.find(hold); it != hold_classes_.end())
    for (auto* cls : it->second)
      sync_ready(*cls);
}

void assigner::hold(const std::string& run_id, const selector& scope,
                    const std::string& key) {
  if (!key.empty()) hold(run_id, hold_key(scope, key));
}

void assigner::hold(const std::string& run_id, std::string hold) {
  release_hold(run_id);
  auto& runs = holders_[hold];
  runs.push_back(run_id);
  held_by_.emplace(run_id, hold);
  if (runs.size() == 1) sync_hold(hold);
}

void assigner::release_hold(const std::string& run_id) {
  auto it = held_by_.find(run_id);
  if (it == held_by_.end()) return;
  auto hold = std::move(it->second);
  held_by_.erase(it);
  auto holders = holders_.find(hold);
  auto& runs = holders->second;
  runs.erase(std::find(runs.begin(), runs.end(), run_id));
  if (runs.empty()) {
    holders_.erase(holders);
    sync_hold(hold);
  }
}

std::string assigner::key_holder(const std::string& run_id) const {
  auto run = runs_.find(run_id);
  if (run == runs_.end() || !held(*run->second.first)) return {};
  return holders_.at(run->second.first->hold).front();
}

std::string assigner::key_first(const std::string& run_id) const {
  auto run = runs_.find(run_id);
  if (run == runs_.end() || held(*run->second.first)) return {};
  const auto* first = key_head(run->second.first->hold);
  return !first || first->id == run_id ? std::string{} : first->id;
}

std::string assigner::holder(const selector& scope, const std::string& key) const {
  auto it = holders_.find(hold_key(scope, key));
  return it == holders_.end() || key.empty() ? std::string{} : it->second.front();
}

std::vector<candidacy> assigner::explain(const std::string& run_id) const {
  auto run = runs_.find(run_id);
  if (run == runs_.end()) return {};
  const auto& cls = *run->second.first;
  auto holder = key_holder(run_id);
  auto first = key_first(run_id);
  std::vector<const agent_entry*> agents;
  agents.reserve(agents_.size());
  for (const auto& [id, entry] : agents_)
    if (entry.known) agents.push_back(&entry);
  // Stable output for people and tests: by name, then id.
  std::sort(agents.begin(), agents.end(), [](const agent_entry* x, const agent_entry* y) {
    return std::tie(x->view.name, x->view.id) < std::tie(y->view.name, y->view.id);
  });
  std::vector<candidacy> result;
  result.reserve(agents.size());
  for (const auto* entry : agents) {
    const auto& v = entry->view;
    candidacy c;
    c.agent_id = v.id;
    c.agent_name = v.name;
    // The checks run in the documented order; the first failing one is the
    // reason, so an operator fixes the most fundamental problem first.
    if (v.status != agent_status::online || !v.held.empty()) {
      c.reason =
          v.status != agent_status::online ? std::string{to_string(v.status)} : v.held;
      c.fits = fits(v, cls);
    } else if (v.plans.count(cls.plan) == 0)
      c.reason = "lacks plan " + cls.plan;
    else if (const auto* req = cls.sel.first_unmet(v.labels))
      c.reason = "selector requirement " + req->to_string() + " not met";
    else if (const auto* req = cls.scope.first_unmet(v.labels))
      c.reason = "outside the token's scope (" + req->to_string() + " not met)";
    else if (!cls.target_agent.empty() && cls.target_agent != v.name)
      c.reason = "not the target agent";
    else if (!holder.empty())
      c.reason = "concurrency key " + cls.concurrency_key + " is held by run " + holder;
    else if (!first.empty())
      c.reason =
          "run " + first + " goes first with concurrency key " + cls.concurrency_key;
    else if (entry->free() <= 0)
      c.reason = "no free slot (" + std::to_string(entry->reserved) + " of " +
                 std::to_string(v.capacity) + " in use)";
    c.candidate = c.reason.empty();
    result.push_back(std::move(c));
  }
  return result;
}

} // namespace polymesh
