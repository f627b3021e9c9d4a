/**
 * The element type of every tensor of a graph, as ONNX's typing rules give it: what the graph declares, else
 * propagated through the nodes (the first typed input for most operators). Portable: no Node APIs.
 */
import { AttributeProto_AttributeType, type GraphProto, type NodeProto } from 'onnx-buf';

const FLOAT32 = 1;
const INT64 = 7;
const BOOL = 9;

/** Element types of the graph's tensors: declared, or propagated through the nodes (first typed input for most ops). */
export function elementTypes(graph: GraphProto): Map<string, number> {
  const types = new Map<string, number>();
  const declare = (name: string, t: number | undefined) => {
    if (t) types.set(name, t);
  };
  for (const v of [...graph.input, ...graph.valueInfo, ...graph.output]) declare(v.name, v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : undefined);
  for (const t of graph.initializer) declare(t.name, t.dataType);
  const intOf = (node: NodeProto, name: string) => {
    const a = node.attribute.find((x) => x.name === name);
    return a && a.type === AttributeProto_AttributeType.INT ? Number(a.i) : undefined;
  };
  for (const node of graph.node) {
    let t: number | undefined;
    switch (node.opType) {
      case 'Constant': {
        const a = node.attribute.find((x) => x.name.startsWith('value'));
        t = a?.t ? a.t.dataType : a?.name === 'value_float' || a?.name === 'value_floats' ? FLOAT32 : INT64;
        break;
      }
      case 'Cast':
        t = intOf(node, 'to');
        break;
      case 'CastLike':
        t = types.get(node.input[1] ?? '');
        break;
      case 'Shape': case 'Size': case 'NonZero': case 'ArgMax': case 'ArgMin':
        t = INT64;
        break;
      case 'Equal': case 'Less': case 'Greater': case 'LessOrEqual': case 'GreaterOrEqual': case 'Not': case 'And': case 'Or': case 'Xor': case 'IsNaN': case 'IsInf':
        t = BOOL;
        break;
      case 'ConstantOfShape': {
        const a = node.attribute.find((x) => x.name === 'value');
        t = a?.t?.dataType ?? FLOAT32;
        break;
      }
      case 'Where':
        t = types.get(node.input[1] ?? '');
        break;
      case 'OneHot':
        t = types.get(node.input[2] ?? '');
        break;
      case 'RandomNormal': case 'RandomUniform':
        t = intOf(node, 'dtype') ?? FLOAT32;
        break;
      default:
        for (const i of node.input) {
          const x = types.get(i);
          if (x) {
            t = x;
            break;
          }
        }
    }
    for (const [k, o] of node.output.entries()) if (o && !types.has(o)) declare(o, k > 0 ? secondaryOutput(node, k, t) : t);
  }
  return types;
}

/** Output `k` (> 0) of a node whose first output has type `first`: TopK's indices, Dropout's mask, LayerNormalization's statistics. */
function secondaryOutput(node: NodeProto, k: number, first: number | undefined): number | undefined {
  switch (node.opType) {
    case 'TopK': return INT64;
    case 'Dropout': return BOOL;
    case 'LayerNormalization': return FLOAT32; // mean and inverse deviation: stash_type, float32 by default
    default: return first;
  }
}
