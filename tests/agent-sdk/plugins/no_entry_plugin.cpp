// A shared library without the plugin entry point. The agent must refuse it.
extern "C" int not_a_polymesh_plugin() {
  return 42;
}
