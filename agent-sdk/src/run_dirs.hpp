// The directories each run gets under the agent's work root:
// `<root>/<run id>/work` and `<root>/<run id>/artifacts`, empty when the run
// starts and gone from that path when it has ended.
//
// Creating and removing three directories per run is most of what an agent
// spends on a short run: on ext4 the removal frees the directories' blocks
// (a synchronous discard when the file system is mounted with `discard`).
// So a finished run's directories are emptied and kept, renamed to
// `<root>/.spare-<n>`, and the next run renames a spare to its own name.
// A run's directories are only kept when they are exactly what was handed
// out: `work` and `artifacts`, real directories, nothing else beside them,
// and their contents could be removed. Their permissions are reset to those
// of freshly created ones. Anything else is removed whole, as before.
//
// `.spare-<pid>-<n>` entries belong to the agent: `sweep` removes those left
// by an earlier process (not those of another live one), `clear` those of
// this one when it stops. A run's directory is `flock`ed while the run has
// it, so `sweep` also removes the run directories of an agent that was
// killed mid-run (nobody holds their lock) and leaves those of another live
// agent sharing the work root. A directory always reaches its run's name
// locked (made, or taken, under a `.spare-` name first).
//
// Thread-safety: all members may be called from any thread; different runs'
// directories never share a path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace polymesh::sdk {

class run_dirs {
public:
  explicit run_dirs(std::filesystem::path root);
  ~run_dirs();
  run_dirs(const run_dirs&) = delete;
  run_dirs& operator=(const run_dirs&) = delete;

  /// `<root>/<id>`; the run's `work` and `artifacts` directories are in it.
  [[nodiscard]] std::filesystem::path path_of(const std::string& id) const;

  /// Makes `<root>/<id>/work` and `<root>/<id>/artifacts` exist and be empty,
  /// from a spare when there is one. REQUIRES: `id` is a run id (no `/`, not
  /// starting with `.`).
  [[nodiscard]] std::error_code prepare(const std::string& id);

  /// Takes the run's directories away from `<root>/<id>`: kept as a spare
  /// when they can be reused (and `reusable`: no process is left in them),
  /// removed otherwise. Errors are returned for the log; nothing is left in
  /// the way of a later run.
  std::error_code retire(const std::string& id, bool reusable = true);

  /// Removes the spares this object kept.
  void clear();

  /// Removes the `.spare-*` entries under the root that no other live
  /// process owns (an earlier process's), and the run directories nobody
  /// holds (left by an agent killed during the run).
  void sweep();

  /// How many spares are kept now.
  [[nodiscard]] size_t spares() const;

private:
  /// Empties a retired run's directory for reuse; false when it must go.
  bool reset_for_reuse(const std::filesystem::path& dir);

  std::filesystem::path root_;
  mutable std::mutex mtx_;
  std::vector<std::filesystem::path> spares_;
  uint64_t next_spare_ = 0;
  /// The locked descriptor of each prepared run's directory, by run id.
  std::map<std::string, int> held_;
  /// The permissions a freshly created directory gets (from the umask),
  /// learned from the first one made.
  std::optional<std::filesystem::perms> fresh_perms_;
};

/// Opens the artifact `name` (a path relative to the run's artifacts
/// directory `dir`, of plain segments) for its upload, setting `fd` (closed
/// by the caller) and `size`. Returns "" or why it cannot be sent. Every
/// component is opened on its own and none is followed when it is a
/// symlink: a process the plan left behind may have swapped a directory on
/// the path, or the file, for a link (to the agent's own files, say) after
/// the listing. The file must be a regular one: a FIFO swapped in would
/// block a plain open for good, and a vanished file must not upload as
/// empty.
[[nodiscard]] std::string open_artifact(const std::filesystem::path& dir,
                                        const std::string& name, int& fd, size_t& size);

} // namespace polymesh::sdk
