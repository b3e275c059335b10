#include "tests/support/meshd_process.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace polymesh::test {

meshd_process::meshd_process(const std::string& binary, const std::string& dir,
                             const std::string& admin_token,
                             std::vector<std::string> extra, const std::string& log_file,
                             nofile_limit files, int listen_fd) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    if (!log_file.empty()) {
      int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (log < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(126);
    }
    if (files.soft > 0) {
      rlimit limit{files.soft, files.hard};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(125);
    }
    if (listen_fd >= 0) {
      if (listen_fd != 3 && ::dup2(listen_fd, 3) < 0) ::_exit(124);
      ::fcntl(3, F_SETFD, 0); // kept across exec
      ::setenv("LISTEN_FDS", "1", 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    }
    ::setenv("POLYMESH_ADMIN_TOKEN", admin_token.c_str(), 1);
    std::vector<std::string> args{binary, "--data-dir", dir};
    // Port 0 unless the caller listens elsewhere (a restart on its old port).
    if (std::find(extra.begin(), extra.end(), "--listen") == extra.end())
      args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    for (auto& e : extra)
      args.push_back(e);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    std::perror("execv meshd");
    ::_exit(127);
  }
  ::close(out[1]);
  // Read the first line: `listening on http://127.0.0.1:PORT`. A meshd that
  // fails to start closes the pipe instead.
  std::string line;
  char c = 0;
  while (::read(out[0], &c, 1) == 1 && c != '\n')
    line += c;
  ::close(out[0]);
  auto colon = line.rfind(':');
  if (line.rfind("listening on http://", 0) != 0 || colon == std::string::npos) {
    kill_and_wait(SIGKILL);
    throw std::runtime_error("meshd did not start; it printed: '" + line + "'");
  }
  port_ = std::stoi(line.substr(colon + 1));
}

meshd_process::~meshd_process() {
  if (pid_ > 0) kill_and_wait(SIGKILL);
}

int meshd_process::kill_and_wait(int sig) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

} // namespace polymesh::test
