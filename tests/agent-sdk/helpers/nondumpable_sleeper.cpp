// A process that makes itself non-dumpable, as ssh-agent does, writes its
// pid to the file its argument names, and sleeps: its /proc/<pid>/environ
// is then unreadable to a process of its user that is not root.
#include <cstdio>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  FILE* f = std::fopen(argv[1], "w");
  if (!f) return 1;
  std::fprintf(f, "%d", static_cast<int>(::getpid()));
  std::fclose(f);
  ::sleep(600);
  return 0;
}
