// The runs an agent ended lately, with the finish the mesh accepted for
// each: a run offered again after it ran (a meshd restored from an older
// backup offers again the runs that were pending in it) is answered with
// that finish, or ends `error/already_ran` when it is no longer known, and
// is never run twice.
//
// Bounded: the last `max_runs` runs, and at most `max_bytes` of finishes
// (run ids, results, errors, reasons, offers). Past the byte bound the oldest
// finishes are forgotten first; their runs stay remembered as having run
// (`outcome::ran`) until the run bound drops them.
//
// Thread-safety: none; the agent calls it under its own mutex.
#pragma once

#include "mesh/wire/json.hpp"

#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>

namespace polymesh::sdk {

class recent_runs {
public:
  /// What the agent remembers of a run.
  enum class outcome {
    /// Let go without being started (the agent was stopping): an offer of
    /// it is not taken; the mesh gives the run to an agent that takes runs.
    not_run,
    /// Its plan ran, but no finish of it is known: the mesh took none (it
    /// ended the run itself, or refused the result), or it was forgotten to
    /// keep to the byte bound.
    ran,
    /// Ended with `finish`, which the mesh accepted.
    finished,
  };

  struct memory {
    outcome what = outcome::ran;
    /// The finish the mesh accepted (`finished` only).
    wire::finish_request finish;
    /// The offer of the run the agent took (its assignment): a poll that
    /// crossed the run's end carries that offer again, which is no new one.
    std::string offer;
  };

  /// REQUIRES: `max_runs >= 1`.
  explicit recent_runs(size_t max_runs = 4096, size_t max_bytes = size_t{16} << 20);

  recent_runs(const recent_runs&) = delete;
  recent_runs& operator=(const recent_runs&) = delete;

  /// Remembers `m` of run `id` as its newest memory, replacing what was
  /// remembered of it. A finish that alone passes `max_bytes` is remembered
  /// as `ran`.
  void remember(const std::string& id, memory m);
  /// What is remembered of run `id`, if anything.
  [[nodiscard]] std::optional<memory> recall(const std::string& id) const;

  /// Runs remembered.
  [[nodiscard]] size_t size() const { return index_.size(); }
  /// Bytes of the finishes remembered, as `cost` counts them.
  [[nodiscard]] size_t bytes() const { return bytes_; }
  /// What remembering `m` of run `id` counts against `max_bytes`.
  [[nodiscard]] static size_t cost(const std::string& id, const memory& m);

private:
  struct entry {
    std::string id;
    memory m;
    /// `cost` of the finish (`finished` only).
    size_t bytes = 0;
    /// Its place in `finishes_` (`finished` only).
    std::list<entry*>::iterator in_finishes;
  };

  void erase(std::list<entry>::iterator it);
  /// Makes the oldest remembered finish a `ran`.
  void forget_oldest_finish();

  const size_t max_runs_;
  const size_t max_bytes_;
  /// Oldest first.
  std::list<entry> entries_;
  std::unordered_map<std::string, std::list<entry>::iterator> index_;
  /// The entries that hold a finish, oldest first.
  std::list<entry*> finishes_;
  size_t bytes_ = 0;
};

} // namespace polymesh::sdk
