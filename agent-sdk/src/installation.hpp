// The agent's installation: `<work root>/.agent-<name>` holds a random id
// that outlives the agent's restarts, so that the mesh can tell the same
// agent starting again after a crash (it takes its name back at once) from a
// second agent started elsewhere under a name in use (refused, see
// docs/agent.md). The file is locked (`flock`) while the agent runs: a
// second process of the same agent on the same work root is refused here,
// before it registers. The lock goes with the process, also when it is
// killed; plans' processes do not inherit it (close-on-exec), but a child
// that an embedding program forks without exec holds it until it exits.
//
// Thread-safety: none; one owner claims it once.
#pragma once

#include <filesystem>
#include <string>

namespace polymesh::sdk {

class installation {
public:
  installation() = default;
  installation(const installation&) = delete;
  installation& operator=(const installation&) = delete;
  ~installation();

  /// Reads (or first writes) the id of agent `name` in `root` and locks it;
  /// returns "" or the problem, naming `work_dir`.
  [[nodiscard]] std::string claim(const std::filesystem::path& root,
                                  const std::string& name);

  /// Unlocks it (the id stays); a later `claim` may lock it again.
  void release();

  /// The id; "" before a successful `claim`.
  [[nodiscard]] const std::string& id() const { return id_; }

private:
  int fd_ = -1;
  std::string id_;
};

} // namespace polymesh::sdk
