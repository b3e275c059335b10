// A process a run leaves behind, of one of two awkward kinds; it writes its
// pid to the file its first argument names, then sleeps:
//   leftover FILE nondumpable   makes itself non-dumpable, as ssh-agent
//                               does: its /proc entries are then unreadable
//                               to a process of its user that is not root;
//   leftover FILE thread        ends its main thread while a second one
//                               sleeps: /proc shows it as a zombie;
//   leftover FILE chain         keeps forking a successor into a session
//                               of its own and exiting at once, every
//                               millisecond, for 10 s at most.
#include <cstdio>
#include <cstring>
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace {

void* sleep_long(void*) {
  ::sleep(600);
  return nullptr;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  if (std::strcmp(argv[2], "chain") == 0) {
    FILE* f = std::fopen(argv[1], "w");
    if (!f) return 1;
    std::fprintf(f, "%d", static_cast<int>(::getpid()));
    std::fclose(f);
    for (int generation = 0; generation < 10000; ++generation) {
      pid_t child = ::fork();
      if (child != 0) ::_exit(child < 0 ? 1 : 0);
      ::setsid();
      ::usleep(1000);
    }
    return 0;
  }
  bool thread = std::strcmp(argv[2], "thread") == 0;
  if (!thread) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  FILE* f = std::fopen(argv[1], "w");
  if (!f) return 1;
  std::fprintf(f, "%d", static_cast<int>(::getpid()));
  std::fclose(f);
  if (thread) {
    pthread_t t;
    if (pthread_create(&t, nullptr, sleep_long, nullptr) != 0) return 1;
    pthread_exit(nullptr);
  }
  ::sleep(600);
  return 0;
}
