/* pair_style equinet: equinet potentials exported with `equinet export`, as a LAMMPS plugin.

   Part of equinet's LAMMPS plugin. It is compiled against LAMMPS's headers, so this folder
   is distributed under the GNU General Public License, version 2 or later (see LICENSE
   here), unlike the rest of equinet.

   Each step: positions and species of the local and ghost atoms and the edges within the
   model's cutoff from LAMMPS's full neighbour list (with the ghosts' own neighbours) go to
   the exported graph, which returns the energies of the local atoms, the forces on all
   atoms (LAMMPS adds the ghosts' onto their owners: newton on) and the virial. Ghost atoms
   reach message_passing_steps x cutoff (+ skin) out, so results on any number of MPI ranks
   equal those on one. */

#include "pair_equinet.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

using namespace LAMMPS_NS;

static const char *const ELEMENTS[] = {
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk",
    "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh",
    "Fl", "Mc", "Lv", "Ts", "Og"};

static int atomic_number(const std::string &symbol)
{
  for (int z = 1; z <= 118; z++)
    if (symbol == ELEMENTS[z - 1]) return z;
  return 0;
}

PairEquinet::PairEquinet(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;                  // needs the neighbours of ghost atoms
  no_virial_fdotr_compute = 1;    // the graph returns the virial
}

PairEquinet::~PairEquinet()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairEquinet::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
}

void PairEquinet::settings(int narg, char ** /*arg*/)
{
  if (narg != 0) error->all(FLERR, "pair_style equinet takes no arguments: write 'pair_style equinet'");
}

/* pair_coeff * * MODEL.pt ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2 ... */

void PairEquinet::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_coeff for pair_style equinet: write 'pair_coeff * * MODEL.pt' and one element per "
               "atom type ({} types here), e.g. 'pair_coeff * * model.pt Cu Ni'",
               ntypes);
  if (!allocated) allocate();

  std::unordered_map<std::string, std::string> files{{"equinet.json", ""}};
  try {
    model = torch::jit::load(arg[2], torch::kCPU, files);
  } catch (const std::exception &e) {
    std::string what = e.what();
    error->all(FLERR, "pair_style equinet: cannot load {} ({}); write it with 'equinet export MODEL -o {}'",
               arg[2], what.substr(0, what.find('\n')), arg[2]);
  }
  model.eval();
  json metadata;
  try {
    metadata = json::parse(files["equinet.json"]);
  } catch (const std::exception &) {
    error->all(FLERR, "pair_style equinet: {} is not a model from 'equinet export' (no equinet.json in it)", arg[2]);
  }
  if (metadata.value("format", "") != "equinet-lammps")
    error->all(FLERR, "pair_style equinet: {} is not a model from 'equinet export'", arg[2]);
  cutoff = metadata["cutoff"].get<double>();
  message_passing_steps = metadata["message_passing_steps"].get<int>();
  dtype = metadata["dtype"].get<std::string>() == "float32" ? torch::kFloat32 : torch::kFloat64;
  const std::vector<int> elements = metadata["elements"].get<std::vector<int>>();

  std::string known;
  for (int z : elements) known += std::string(known.empty() ? "" : " ") + ELEMENTS[z - 1];
  species_of_type.assign(ntypes + 1, -1);
  for (int type = 1; type <= ntypes; type++) {
    const std::string symbol = arg[2 + type];
    const int z = atomic_number(symbol);
    if (z == 0) error->all(FLERR, "pair_coeff: '{}' (atom type {}) is not an element symbol", symbol, type);
    const auto found = std::find(elements.begin(), elements.end(), z);
    if (found == elements.end())
      error->all(FLERR, "pair_coeff: element {} (atom type {}) is not one the model {} was trained on ({})", symbol,
                 type, arg[2], known);
    species_of_type[type] = static_cast<int>(found - elements.begin());
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
  // The graph's sizes change every step: run it as traced, without shape-specialised re-optimisation.
  torch::jit::setGraphExecutorOptimize(false);
}

void PairEquinet::init_style()
{
  if (force->newton_pair == 0) error->all(FLERR, "pair_style equinet requires 'newton on' (the default)");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style equinet requires 'units metal' (eV, Å, ps), got units {}", update->unit_style);
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  // An atomic energy sees atoms up to message_passing_steps cutoffs away; the ghosts that far
  // out must be there, with their own neighbours.
  const double ghost_cutoff = message_passing_steps * cutoff + neighbor->skin;
  if (comm->cutghostuser < ghost_cutoff) {
    comm->cutghostuser = ghost_cutoff;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style equinet: ghost-atom cutoff {:.6g} Å ({} message-passing steps x {:.6g} Å + skin)\n",
                     ghost_cutoff, message_passing_steps, cutoff);
  }
}

double PairEquinet::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

void PairEquinet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom || cvflag_atom) error->all(FLERR, "pair_style equinet does not compute per-atom virials (stress/atom)");

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  torch::Tensor pos = torch::empty({nall, 3}, torch::kFloat64);
  torch::Tensor species = torch::empty({nall}, torch::kInt64);
  auto pos_of = pos.accessor<double, 2>();
  auto species_of = species.accessor<int64_t, 1>();
  for (int i = 0; i < nall; i++) {
    for (int k = 0; k < 3; k++) pos_of[i][k] = x[i][k];
    species_of[i] = species_of_type[type[i]];
  }

  // Edges j -> i within the cutoff, for local atoms and ghosts (the list holds up to cutoff + skin).
  senders.clear();
  receivers.clear();
  const double cutoff_squared = cutoff * cutoff;
  for (int ii = 0; ii < list->inum + list->gnum; ii++) {
    const int i = list->ilist[ii];
    const int *neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutoff_squared) {
        senders.push_back(j);
        receivers.push_back(i);
      }
    }
  }
  const auto num_edges = static_cast<int64_t>(senders.size());
  torch::Tensor edge_index = torch::empty({2, num_edges}, torch::kInt64);
  std::copy(senders.begin(), senders.end(), edge_index.data_ptr<int64_t>());
  std::copy(receivers.begin(), receivers.end(), edge_index.data_ptr<int64_t>() + num_edges);

  std::vector<torch::jit::IValue> inputs{pos.to(dtype), species, edge_index,
                                         torch::scalar_tensor(static_cast<int64_t>(nlocal), torch::kInt64)};
  const auto outputs = model.forward(inputs).toTuple()->elements();
  const torch::Tensor energy = outputs[0].toTensor().to(torch::kFloat64).contiguous();
  const torch::Tensor forces = outputs[1].toTensor().to(torch::kFloat64).contiguous();
  const torch::Tensor w = outputs[2].toTensor().to(torch::kFloat64).contiguous();

  auto energy_of = energy.accessor<double, 1>();
  auto force_of = forces.accessor<double, 2>();
  for (int i = 0; i < nall; i++)
    for (int k = 0; k < 3; k++) f[i][k] += force_of[i][k];
  if (eflag_global)
    for (int i = 0; i < nlocal; i++) eng_vdwl += energy_of[i];
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += energy_of[i];
  if (vflag_global) {
    auto w_of = w.accessor<double, 1>();
    for (int k = 0; k < 6; k++) virial[k] += w_of[k];
  }
}
