/* pair_style equinet: equinet potentials exported with `equinet export`, as a LAMMPS plugin.

   Part of equinet's LAMMPS plugin. It is compiled against LAMMPS's headers, so this folder
   is distributed under the GNU General Public License, version 2 or later (see LICENSE
   here), unlike the rest of equinet.

   Each step builds the model's graph from LAMMPS's full neighbour list: the local atoms,
   and the edges within the model's cutoff as vectors. A ghost atom that is a periodic
   image of a local atom is that local atom in the graph (same features, the image's edge
   vector), so on one MPI rank the graph is the periodic structure's and no ghost atom is
   evaluated. Ghosts owned by other ranks are atoms of their own, with incoming edges up
   to message_passing_steps - 1 edges out from the local atoms (the farther ones are
   needed only as senders); they reach message_passing_steps x cutoff (+ skin), so results
   on any number of ranks equal those on one. The exported graph returns the energies of
   the local atoms, the forces on all its atoms (the other ranks' ghosts' are added onto
   their owners by LAMMPS: newton on) and the virial.

   With `pair_style equinet chunk N` the local atoms go in compact pieces of at most N, each
   the local atoms of a graph of its own built the same way (the other local atoms it
   reaches are atoms of that graph like ghosts). The pieces' energies, forces and virials
   add up to the one graph's, and the model's memory is that of one piece's graph.

   A committee's graph (equinet export committee.yaml) returns the members' means and each
   member's forces. Each member's forces on the other ranks' ghosts are added onto their
   owners here, by reverse communication, before the per-atom force std is taken on the
   local atoms: the std of a sum is not the sum of the stds. `fix pair` reads it
   (extract_peratom "forces_std"). */

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
#include "utils.h"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
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

Pair *LAMMPS_NS::create_pair_equinet(LAMMPS *lmp)
{
  return new PairEquinet(lmp);
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

/* pair_style equinet [chunk N]: with chunk, the model runs on graphs of at most N local atoms
   each (and the atoms within message_passing_steps cutoffs of them), so that its memory is
   bounded on a large system, at the cost of evaluating those surrounding atoms once more. */

void PairEquinet::settings(int narg, char **arg)
{
  chunk = 0;
  if (narg == 0) return;
  char *end = nullptr;
  const long value = narg == 2 && strcmp(arg[0], "chunk") == 0 ? std::strtol(arg[1], &end, 10) : 0;
  if (value < 1 || *end != '\0' || value > 1000000000)
    error->all(FLERR, "pair_style equinet: write 'pair_style equinet', or 'pair_style equinet chunk N' to run the "
                      "model on at most N local atoms at a time (N > 0; bounds its memory on large systems)");
  chunk = static_cast<int>(value);
}

/* pair_coeff * * MODEL.pt ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2 ... (MODEL.pt: one model or a committee) */

void PairEquinet::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_coeff for pair_style equinet: write 'pair_coeff * * MODEL.pt' and one element per "
               "atom type ({} types here), e.g. 'pair_coeff * * model.pt Cu Ni'",
               ntypes);
  if (!allocated) allocate();

  json metadata;
  try {
    metadata = json::parse(load(arg[2]));
  } catch (const std::exception &) {
    error->all(FLERR, "pair_style equinet: {} is not a model from 'equinet export' (no equinet.json in it)", arg[2]);
  }
  if (metadata.value("format", "") != "equinet-lammps")
    error->all(FLERR, "pair_style equinet: {} is not a model from 'equinet export'", arg[2]);
  cutoff = metadata["cutoff"].get<double>();
  message_passing_steps = metadata["message_passing_steps"].get<int>();
  members = metadata.value("members", 1);
  model_path = arg[2];
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
}

/* Loads a TorchScript (.pt) or AOTInductor (.pt2) model; returns its equinet.json. */

std::string PairEquinet::load(const char *path)
{
  const std::string name = path;
  const bool aotinductor = name.size() > 4 && name.compare(name.size() - 4, 4, ".pt2") == 0;
  std::unordered_map<std::string, std::string> files{{"equinet.json", ""}};
  try {
    if (aotinductor) {
      compiled = std::make_unique<torch::inductor::AOTIModelPackageLoader>(name);
      files = compiled->get_metadata();
    } else {
      compiled.reset();
      scripted = torch::jit::load(name, torch::kCPU, files);
      scripted.eval();
      // The graph's sizes change every step: run it as traced, without shape-specialised re-optimisation.
      torch::jit::setGraphExecutorOptimize(false);
    }
  } catch (const std::exception &e) {
    const std::string what = e.what();
    error->all(FLERR, "pair_style equinet: cannot load {} ({}); write it with 'equinet export MODEL -o {}'", name,
               what.substr(0, what.find('\n')), name);
  }
  return files["equinet.json"];
}

std::vector<torch::Tensor> PairEquinet::run(std::vector<torch::Tensor> inputs)
{
  // The graph holds its own backward: no autograd history (which would keep every
  // intermediate alive, were any of its constants to require grad).
  torch::NoGradGuard no_grad;
  if (compiled) return compiled->run(inputs);
  std::vector<torch::jit::IValue> values(inputs.begin(), inputs.end());
  const auto tuple = scripted.forward(values).toTuple();
  std::vector<torch::Tensor> outputs;
  for (const auto &value : tuple->elements()) outputs.push_back(value.toTensor());
  return outputs;
}

void PairEquinet::init_style()
{
  if (force->newton_pair == 0) error->all(FLERR, "pair_style equinet requires 'newton on' (the default)");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style equinet requires 'units metal' (eV, Å, ps), got units {}", update->unit_style);
  // On one rank every ghost is an image of a local atom: the graph needs only the local
  // atoms' neighbours. Otherwise an atomic energy sees atoms up to message_passing_steps
  // cutoffs away; the ghosts that far out must be there, with their own neighbours.
  fold_images = comm->nprocs == 1 && atom->tag_enable;
  ghostneigh = fold_images ? 0 : 1;
  if (chunk > 0 && comm->me == 0)
    utils::logmesg(lmp, "pair_style equinet: graphs of at most {} local atoms, each with the atoms {} cutoffs around them\n",
                   chunk, message_passing_steps);
  if (fold_images) {
    neighbor->add_request(this, NeighConst::REQ_FULL);
    return;
  }
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  const double ghost_cutoff = message_passing_steps * cutoff + neighbor->skin;
  if (comm->cutghostuser < ghost_cutoff) {
    comm->cutghostuser = ghost_cutoff;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style equinet: ghost-atom cutoff {:.6g} Å ({} message-passing steps x {:.6g} Å + skin)\n",
                     ghost_cutoff, message_passing_steps, cutoff);
  }
}

/* Per-atom quantities for `fix ID GROUP pair N equinet forces_std 0`: a committee's force std
   on the local atoms (eV/Å), computed on every step (so with the trigger flag 0). */

void *PairEquinet::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (strcmp(name, "forces_std") != 0) return nullptr;
  if (members == 1 && !model_path.empty())
    error->all(FLERR,
               "fix pair: {} is one model, and only a committee has forces_std; export several models with "
               "'equinet export committee.yaml -o committee-lammps.pt'",
               model_path);
  return forces_std.data();
}

double PairEquinet::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* Which graph atom each LAMMPS atom is: itself, or for a ghost that is an image of a local
   atom, that local atom. No atom is in a graph yet. */

void PairEquinet::fold_ghosts()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  atom_of.resize(nall);
  for (int i = 0; i < nall; i++) atom_of[i] = i;
  if (atom->tag_enable) {
    const tagint *tag = atom->tag;
    local_of_tag.clear();
    for (int i = 0; i < nlocal; i++) local_of_tag[tag[i]] = i;
    for (int j = nlocal; j < nall; j++) {
      const auto found = local_of_tag.find(tag[j]);
      if (found != local_of_tag.end()) atom_of[j] = found->second;
    }
  }
  node_of.assign(nall, -1);
  atom_of_node.clear();
}

/* The local atoms in chunks of at most `chunk` atoms, compact in space (each graph then
   needs few surrounding atoms): halves at the median along the longest side of their
   bounding box until each piece is small enough. No chunk: all local atoms in one. */

void PairEquinet::cut_chunks()
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  std::vector<int> order(nlocal);
  std::iota(order.begin(), order.end(), 0);
  chunks.clear();
  std::vector<std::pair<int, int>> pending{{0, nlocal}};
  while (!pending.empty()) {
    const auto [begin, end] = pending.back();
    pending.pop_back();
    if (chunk <= 0 || end - begin <= chunk) {
      chunks.emplace_back(order.begin() + begin, order.begin() + end);
      continue;
    }
    double low[3] = {INFINITY, INFINITY, INFINITY}, high[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int n = begin; n < end; n++)
      for (int k = 0; k < 3; k++) {
        low[k] = std::min(low[k], x[order[n]][k]);
        high[k] = std::max(high[k], x[order[n]][k]);
      }
    int axis = 0;
    for (int k = 1; k < 3; k++)
      if (high[k] - low[k] > high[axis] - low[axis]) axis = k;
    const int middle = begin + (end - begin) / 2;
    std::nth_element(order.begin() + begin, order.begin() + middle, order.begin() + end,
                     [x, axis](int a, int b) { return x[a][axis] < x[b][axis]; });
    pending.emplace_back(begin, middle);
    pending.emplace_back(middle, end);
  }
}

/* The graph of one chunk (see the top of the file), breadth first from its local atoms
   `roots`: graph atoms 0..roots.size()-1 are those, then the other atoms as they are
   reached; an edge j -> i for every neighbour j of i within the cutoff, with the vector
   x_i - x_j, for i a root or an atom fewer than message_passing_steps edges out. */

void PairEquinet::build_graph(const std::vector<int> &roots)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  for (const int a : atom_of_node) node_of[a] = -1;    // the previous chunk's
  atom_of_node.assign(roots.begin(), roots.end());
  for (size_t n = 0; n < roots.size(); n++) node_of[roots[n]] = static_cast<int>(n);
  senders.clear();
  receivers.clear();
  edge_vectors.clear();
  frontier.assign(roots.begin(), roots.end());
  const double cutoff_squared = cutoff * cutoff;
  for (int hop = 0; hop < message_passing_steps && !frontier.empty(); hop++) {
    next_frontier.clear();
    for (const int i : frontier) {
      const int *neighbours = list->firstneigh[i];
      for (int jj = 0; jj < list->numneigh[i]; jj++) {
        const int j = neighbours[jj] & NEIGHMASK;
        const double dx = x[i][0] - x[j][0], dy = x[i][1] - x[j][1], dz = x[i][2] - x[j][2];
        if (dx * dx + dy * dy + dz * dz >= cutoff_squared) continue;
        const int a = atom_of[j];
        if (node_of[a] < 0) {
          if (fold_images && a >= nlocal)
            error->one(FLERR, "pair_style equinet: ghost atom {} on one rank is not an image of a local atom (report this as a bug)", atom->tag[j]);
          node_of[a] = static_cast<int>(atom_of_node.size());
          atom_of_node.push_back(a);
          if (hop + 1 < message_passing_steps) next_frontier.push_back(a);
        }
        senders.push_back(node_of[a]);
        receivers.push_back(node_of[i]);
        edge_vectors.insert(edge_vectors.end(), {dx, dy, dz});
      }
    }
    std::swap(frontier, next_frontier);
  }
}

void PairEquinet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom || cvflag_atom) error->all(FLERR, "pair_style equinet does not compute per-atom virials (stress/atom)");

  fold_ghosts();
  cut_chunks();
  if (members > 1) member_forces.assign(static_cast<size_t>(atom->nlocal + atom->nghost) * 3 * members, 0.0);
  double **f = atom->f;
  for (const auto &roots : chunks) {
    build_graph(roots);
    const auto num_nodes = static_cast<int64_t>(atom_of_node.size());
    const auto num_edges = static_cast<int64_t>(senders.size());
    torch::Tensor species = torch::empty({num_nodes}, torch::kInt64);
    auto species_of = species.accessor<int64_t, 1>();
    for (int64_t n = 0; n < num_nodes; n++) species_of[n] = species_of_type[atom->type[atom_of_node[n]]];
    torch::Tensor edge_index = torch::empty({2, num_edges}, torch::kInt64);
    std::copy(senders.begin(), senders.end(), edge_index.data_ptr<int64_t>());
    std::copy(receivers.begin(), receivers.end(), edge_index.data_ptr<int64_t>() + num_edges);
    const torch::Tensor edge_vec = torch::from_blob(edge_vectors.data(), {num_edges, 3}, torch::kFloat64).to(dtype);

    const auto num_roots = static_cast<int64_t>(roots.size());
    const auto outputs = run({edge_vec, species, edge_index, torch::scalar_tensor(num_roots, torch::kInt64)});
    const torch::Tensor energy = outputs[0].to(torch::kFloat64).contiguous();
    const torch::Tensor forces = outputs[1].to(torch::kFloat64).contiguous();
    const torch::Tensor w = outputs[2].to(torch::kFloat64).contiguous();

    auto force_of = forces.accessor<double, 2>();
    for (int64_t n = 0; n < num_nodes; n++)
      for (int k = 0; k < 3; k++) f[atom_of_node[n]][k] += force_of[n][k];
    auto energy_of = energy.accessor<double, 1>();
    if (eflag_global)
      for (int64_t n = 0; n < num_roots; n++) eng_vdwl += energy_of[n];
    if (eflag_atom)
      for (int64_t n = 0; n < num_roots; n++) eatom[roots[n]] += energy_of[n];
    if (vflag_global) {
      auto w_of = w.accessor<double, 1>();
      for (int k = 0; k < 6; k++) virial[k] += w_of[k];
    }
    if (members > 1) add_member_forces(outputs[3].to(torch::kFloat64).contiguous());
  }
  if (members > 1) committee_spread();
}

/* Adds a graph's forces of each member onto its LAMMPS atoms.
   forces_of_members: [members, graph atoms, 3] eV/Å. */

void PairEquinet::add_member_forces(const torch::Tensor &forces_of_members)
{
  const int width = 3 * members;
  auto force_of = forces_of_members.accessor<double, 3>();
  for (int64_t n = 0; n < forces_of_members.size(1); n++) {
    const size_t i = atom_of_node[n];
    for (int m = 0; m < members; m++)
      for (int k = 0; k < 3; k++) member_forces[i * width + 3 * m + k] += force_of[m][n][k];
  }
}

/* forces_std of each local atom, as equinet.Calculator's results["forces_std"]: the norm
   over x, y, z of the members' population standard deviations of the atom's total force. */

void PairEquinet::committee_spread()
{
  const int nlocal = atom->nlocal;
  const int width = 3 * members;
  // One member at a time: 3 values per atom fit the buffers LAMMPS sizes for forces, also
  // under pair_style hybrid, which takes its sub-styles' comm_reverse before pair_coeff.
  // On one rank with images folded, no ghost is in the graph and there is nothing to add.
  if (!fold_images)
    for (reverse_member = 0; reverse_member < members; reverse_member++) comm->reverse_comm(this, 3);

  // Never empty: fix pair takes a null pointer (a rank without atoms) for a name the pair style lacks.
  forces_std.assign(std::max(nlocal, 1), 0.0);
  for (int i = 0; i < nlocal; i++) {
    const double *of = &member_forces[static_cast<size_t>(i) * width];
    double variance = 0.0;
    for (int k = 0; k < 3; k++) {
      double mean = 0.0;
      for (int m = 0; m < members; m++) mean += of[3 * m + k];
      mean /= members;
      for (int m = 0; m < members; m++) variance += (of[3 * m + k] - mean) * (of[3 * m + k] - mean);
    }
    forces_std[i] = std::sqrt(variance / members);
  }
}

int PairEquinet::pack_reverse_comm(int n, int first, double *buf)
{
  const int width = 3 * members;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 3; k++) buf[3 * i + k] = member_forces[static_cast<size_t>(first + i) * width + 3 * reverse_member + k];
  return 3 * n;
}

void PairEquinet::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int width = 3 * members;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 3; k++) member_forces[static_cast<size_t>(list[i]) * width + 3 * reverse_member + k] += buf[3 * i + k];
}
