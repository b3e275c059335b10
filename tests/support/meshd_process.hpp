// A real `meshd` process for tests that must kill or restart the binary:
// started on 127.0.0.1:0 with a data directory, its bound port read from the
// `listening on http://HOST:PORT` line it prints.
#pragma once

#include <string>
#include <sys/resource.h>
#include <sys/types.h>
#include <vector>

namespace polymesh::test {

/// A limit on open files (RLIMIT_NOFILE) for a meshd; 0: inherited.
struct nofile_limit {
  rlim_t soft = 0;
  rlim_t hard = 0;
};

class meshd_process {
public:
  /// Starts `binary --listen 127.0.0.1:0 --data-dir dir [extra...]` with
  /// POLYMESH_ADMIN_TOKEN=`admin_token`, its log (stderr) into `log_file`
  /// when one is given, under `files` when set. With `listen_fd` (>= 0),
  /// that socket is passed as systemd's socket activation passes it:
  /// descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` meshd's. Throws if it does
  /// not come up.
  meshd_process(const std::string& binary, const std::string& dir,
                const std::string& admin_token, std::vector<std::string> extra = {},
                const std::string& log_file = {}, nofile_limit files = {},
                int listen_fd = -1);
  ~meshd_process();

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  /// Sends `sig` and waits for the process; returns its wait status.
  int kill_and_wait(int sig);

private:
  pid_t pid_ = -1;
  int port_ = 0;
};

} // namespace polymesh::test
