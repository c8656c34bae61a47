"""Running the accuracy benchmark's points: one point and seed at a time,
resumable, through the real tools.

Per (point, seed), in ``<work>/<point>/seed<seed>/``: ``tools/train.py`` ->
``tools/test.py`` [-> ``tools/quantize.py`` -> ``tools/test.py`` (FS: the WQ
row) | -> ``tools/compress_bsf.py`` -> ``tools/test.py`` (BSF)]; a point made
from another point's trained model takes that run (trained first if missing)
through ``tools/quantize_int8.py`` (int8) or ``tools/compress.py`` and
fine-tuning (KSE, LRF). A finished run has written ``result.json`` and is
read back; an interrupted training resumes.
"""
import contextlib
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

from fsnet_mmdet.tools.pipeline import (map_of, quantize_and_test, run_tool,
                                        seconds_per_iteration,
                                        train_resumable, training_records)
from fsnet_mmdet.utils.io import write_json_atomic

from .configs import (build, config_text, count_flops, finetune_text, resolve,
                      write_config)
from .variants import FINETUNED, SOURCES, VARIANTS, Variant, is_bsf


def final_loss(train_dir: str, key: str = 'loss') -> Optional[float]:
    """Mean of a logged training loss over the last quarter of the iterations.

    A second, less noisy measure of fit than a 250-iteration mAP, which sits
    where detections first clear the score threshold.

    Args:
        train_dir: the run's training work dir.
        key: ``'loss'`` (the total), ``'loss_cls'`` or ``'loss_bbox'``.
    """
    losses = [r[key] for r in training_records(train_dir) if key in r]
    tail = losses[-max(1, len(losses) // 4):]
    return statistics.mean(tail) if tail else None


LOSSES = ('loss', 'loss_cls', 'loss_bbox')


def run_in_process(main: Callable, tool: str, *args, log: str,
                   what: str) -> None:
    """Run a checkpoint tool's ``main(argv)`` (what ``tools/<tool>`` runs) in
    this process, its output appended to ``log``.

    For the tools that only read and write checkpoints (quantize_int8,
    compress_bsf, compress): it saves an interpreter start per step.
    Training and testing stay separate processes (:func:`run_tool`).

    Raises:
        SystemExit: the tool failed; names the command and the log file.
    """
    argv = [str(a) for a in args]
    with open(log, 'a') as f:
        f.write(f'$ {tool} {" ".join(argv)}  (in the benchmark process)\n')
        f.flush()
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                main(argv)
        except SystemExit as err:
            if err.code not in (None, 0):
                f.write(f'{err.code}\n')
                raise SystemExit(f'{what}: step failed: {tool} '
                                 f'{" ".join(argv)} (output in {log})') from None


_FLOPS: Dict[str, int] = {}


def _config_flops(variant: Variant, config: str) -> int:
    """FLOPs of the model a finished run's config builds (once per point)."""
    from fsnet_mmdet.tools.count_params import build_model_from_config

    if variant.name not in _FLOPS:
        _FLOPS[variant.name] = count_flops(build_model_from_config(config))
    return _FLOPS[variant.name]


def run_one(variant: Variant, seed: int, iters: int, work: str,
            data_root: str, finetune_iters: int = 250) -> dict:
    """Run one point (train, test, and its compression steps); returns its
    result, read back when the run has finished before."""
    run_dir = os.path.join(work, variant.name, f'seed{seed}')
    result_path = os.path.join(run_dir, 'result.json')
    train_dir = os.path.join(run_dir, 'train')
    if os.path.exists(result_path):
        result = json.load(open(result_path))
        if variant.compress in FINETUNED and result.get(
                'finetune_iters') != finetune_iters:
            raise SystemExit(
                f'{result_path}: fine-tuned {result.get("finetune_iters")} '
                f'iterations, asked for --finetune-iters {finetune_iters}: use '
                f'another --work-dir')
        for key in LOSSES:  # results written before these were recorded
            result.setdefault(key, final_loss(train_dir, key))
        if result.get('flops') is None:  # ... or before FLOPs were counted
            result['flops'] = _config_flops(variant, os.path.join(run_dir,
                                                                  'config.py'))
        return result
    start = time.time()
    os.makedirs(run_dir, exist_ok=True)
    steps = dict(log=os.path.join(run_dir, 'log.txt'),
                 what=f'bench_accuracy {variant.name} seed {seed}')
    if variant.compress:
        source = resolve([VARIANTS[variant.source]], work, data_root)[0]
        src = source_run(source, seed, iters, work, data_root,
                         finetune_iters, **steps)
        if variant.compress == 'int8':
            result = _run_int8(variant, seed, iters, run_dir, src, **steps)
        else:
            result = _run_finetuned(variant, seed, iters, run_dir, src,
                                    finetune_iters, **steps)
    else:
        result = _run_trained(variant, seed, iters, run_dir, data_root, **steps)
    result['wall_s'] = time.time() - start
    write_json_atomic(result_path, result)
    return result


def _run_trained(variant: Variant, seed: int, iters: int, run_dir: str,
                 data_root: str, log: str, what: str) -> dict:
    """Train, test (and quantize + test, or compress + test) one point."""
    from fsnet_mmdet.utils.io import save_atomic
    from fsnet_mmdet.layers.accounting import count_params
    import torch

    train_dir = os.path.join(run_dir, 'train')
    config = write_config(os.path.join(run_dir, 'config.py'),
                          config_text(variant, seed, iters, data_root))
    checkpoint = train_resumable(config, train_dir, log=log, what=what)
    tested = checkpoint
    if is_bsf(variant):  # what ships: packed sign bits (same outputs)
        from fsnet_mmdet.tools.baseline_checkpoints import compress_bsf_main
        tested = os.path.join(run_dir, 'weights_bsf.pth')
        run_in_process(compress_bsf_main, 'tools/compress_bsf.py', config,
                       checkpoint, tested, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, tested, '--work-dir', test_dir,
             log=log, what=what)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    model = build(variant, run_dir, data_root, state['state_dict'])
    counts = count_params(model)
    fp32 = os.path.join(run_dir, 'weights_fp32.pth')
    result = dict(variant=variant.name, seed=seed, iters=iters,
                  widen=variant.widen, params=counts.stored,
                  mAP=map_of(test_dir), s_iter=seconds_per_iteration(train_dir),
                  **{key: final_loss(train_dir, key) for key in LOSSES},
                  bytes=save_atomic(state['state_dict'], fp32),
                  flops=count_flops(model))
    if is_bsf(variant):
        result.update(bytes_float=result['bytes'], bytes=os.path.getsize(tested),
                      bits=counts.bits, effective=counts.effective)
    if variant.fs:
        wq_config = write_config(os.path.join(run_dir, 'config_wq.py'),
                                 config_text(variant, seed, iters, data_root,
                                             wq=True))
        mAP_wq, bytes_wq = quantize_and_test(config, wq_config, checkpoint,
                                             run_dir, log=log, what=what)
        result.update(effective_wq=counts.effective_wq, mAP_wq=mAP_wq,
                      bytes_wq=bytes_wq)
    # Keep results, not 1-7 MB weights; a point others start from keeps its
    # float weights (weights_fp32.pth).
    for path in (checkpoint,) + (() if variant.name in SOURCES else (fp32,)):
        os.remove(path)
    return result


def source_run(source: Variant, seed: int, iters: int, work: str,
               data_root: str, finetune_iters: int, log: str,
               what: str) -> dict:
    """The trained run a point starts from: ``dict(config, weights, result)``.

    Trains the source point (its own run, same seed) if it has not run; a run
    that finished before its weights were kept is trained (a compressed
    point: compressed and fine-tuned) again, with the same generated config
    and seed, under its ``retrain/`` (the row keeps the first run's mAP; the
    retrained weights are what the point uses).
    """
    from fsnet_mmdet.utils.io import save_atomic
    import torch

    src_dir = os.path.join(work, source.name, f'seed{seed}')
    result = run_one(source, seed, iters, work, data_root, finetune_iters)
    if result.get('iters') != iters:
        raise SystemExit(f'{src_dir}: trained {result.get("iters")} '
                         f'iterations, this benchmark {iters}: use another '
                         f'--work-dir')
    weights = os.path.join(src_dir, 'weights_fp32.pth')
    config = os.path.join(src_dir, 'config.py')
    retrain = os.path.join(src_dir, 'retrain')
    if not os.path.exists(weights):
        again = 'compressing and fine-tuning' if source.compress else 'training'
        print(f'    {source.name} seed {seed} finished without its weights: '
              f'{again} it again in {retrain}', flush=True)
        if source.compress:
            parent = resolve([VARIANTS[source.source]], work, data_root)[0]
            _run_finetuned(source, seed, iters, retrain, source_run(
                parent, seed, iters, work, data_root, finetune_iters, log,
                what), finetune_iters, log, what)
            os.replace(os.path.join(retrain, 'weights_fp32.pth'), weights)
        else:
            checkpoint = train_resumable(
                write_config(os.path.join(retrain, 'config.py'),
                             config_text(source, seed, iters, data_root)),
                os.path.join(retrain, 'train'), log=log, what=what)
            state = torch.load(checkpoint, map_location='cpu',
                               weights_only=False)
            save_atomic(state['state_dict'], weights)
            os.remove(checkpoint)
    if os.path.exists(os.path.join(retrain, 'config.py')):
        config = os.path.join(retrain, 'config.py')
    return dict(config=config, weights=weights, result=result)


def _run_int8(variant: Variant, seed: int, iters: int, run_dir: str,
              src: dict, log: str, what: str) -> dict:
    """int8 weights of the source's trained model, tested."""
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.compression.int8 import effective_params, int8_weights
    from fsnet_mmdet.tools.baseline_checkpoints import quantize_int8_main
    from fsnet_mmdet.tools.count_params import build_model_from_config

    out = os.path.join(run_dir, 'weights_int8.pth')
    run_in_process(quantize_int8_main, 'tools/quantize_int8.py', src['config'],
                   src['weights'], out, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', src['config'], out, '--work-dir', test_dir,
             log=log, what=what)
    model = build_model_from_config(src['config'])
    weights, state = int8_weights(model), model.state_dict()
    quantized = sum(state[k].numel() for k in weights)
    channels = sum(state[k].shape[axis] for k, axis in weights.items())
    params = count_params(model).stored
    finetuned = src['result'].get('finetune_iters')  # the source's, shown
    return dict(variant=variant.name, seed=seed, iters=iters,
                **({'finetune_iters': finetuned} if finetuned else {}),
                widen=variant.widen, source=variant.source, params=params,
                effective=effective_params(params, quantized, channels),
                bytes=os.path.getsize(out), mAP=map_of(test_dir),
                mAP_source=src['result']['mAP'],
                s_iter=src['result'].get('s_iter'),
                **{key: None for key in LOSSES}, flops=count_flops(model))


def _run_finetuned(variant: Variant, seed: int, iters: int, run_dir: str,
                   src: dict, finetune_iters: int, log: str, what: str) -> dict:
    """KSE or LRF of the source's trained model, fine-tuned, tested."""
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.utils.io import save_atomic
    from fsnet_mmdet.tools.compress import main as compress_main
    from fsnet_mmdet.tools.count_params import build_model_from_config
    import torch

    compressed = os.path.join(run_dir, 'compressed')
    report_path = os.path.join(compressed, 'report.json')
    if not os.path.exists(report_path):  # written last: the pair is complete
        options = ['--seed', seed] if variant.compress == 'kse' else []
        run_in_process(compress_main, 'tools/compress.py', src['config'],
                       src['weights'], '--method', variant.compress,
                       '--target', variant.target, *options, '--out-dir',
                       compressed, log=log, what=what)
    report = json.load(open(report_path))
    config = write_config(os.path.join(run_dir, 'config.py'), finetune_text(
        os.path.join(compressed, 'config.py'), variant.label, seed,
        finetune_iters))
    train_dir = os.path.join(run_dir, 'train')
    checkpoint = train_resumable(config, train_dir, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, checkpoint, '--work-dir', test_dir,
             log=log, what=what)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    model = build_model_from_config(config)
    model.load_state_dict(state['state_dict'])
    counts = count_params(model)
    # float32 parameters: every bit beyond 32 per parameter is an index's.
    params, bits = counts.stored, counts.bits - 32 * counts.stored
    fp32 = os.path.join(run_dir, 'weights_fp32.pth')
    result = dict(variant=variant.name, seed=seed, iters=iters,
                  finetune_iters=finetune_iters, widen=variant.widen,
                  source=variant.source, target=variant.target, params=params,
                  index_bits=bits, effective=params + bits / 32,
                  mAP=map_of(test_dir), mAP_source=src['result']['mAP'],
                  s_iter=seconds_per_iteration(train_dir),
                  **{key: final_loss(train_dir, key) for key in LOSSES},
                  bytes=save_atomic(state['state_dict'], fp32),
                  flops=count_flops(model), compression=report['settings'])
    # A point others start from keeps its float weights, as _run_trained's.
    for path in (checkpoint, os.path.join(compressed, 'checkpoint.pth')) + (
            () if variant.name in SOURCES else (fp32,)):
        os.remove(path)
    return result


def cost(variant: Variant, iters: int, finetune_iters: int) -> int:
    """Training iterations of a point's run (the ETA's unit)."""
    if variant.compress == 'int8':
        return 0
    return finetune_iters if variant.compress else iters


def run_all(variants: List[Variant], seeds: List[int], iters: int, work: str,
            data_root: str, finetune_iters: int,
            report_only: bool = False) -> List[dict]:
    """Run every point for every seed, with progress and an ETA on stdout.

    Seed-major: every point gets its first seed before any gets a second.
    Finished runs are read back ("done, skipped").

    Args:
        variants: the resolved points (:func:`.configs.resolve`), in run
            order: a point made from another point's trained model after it.
        seeds: the seeds, in order.
        iters: training iterations of a run.
        work: the runs' folder.
        data_root: the VOC-style data the runs train and test on.
        finetune_iters: KSE / LRF fine-tuning iterations.
        report_only: run nothing: only the runs finished so far are read.

    Returns:
        The results (``result.json``) of the runs, in run order.
    """
    jobs = [(v, s) for s in seeds for v in variants]
    finished = [os.path.exists(os.path.join(work, v.name, f'seed{s}',
                                            'result.json')) for v, s in jobs]
    print(f'bench_accuracy: {len(variants)} points x {len(seeds)} seeds, '
          f'{iters} iterations each'
          + (f' (KSE / LRF: + {finetune_iters} of fine-tuning)'
             if any(v.compress in FINETUNED for v in variants) else '')
          + f'; runs in {work}', flush=True)
    results, done_s, done_iters = [], 0.0, 0
    for i, ((v, seed), was_done) in enumerate(zip(jobs, finished), 1):
        per_iter = done_s / done_iters if done_iters else None
        left = sum(cost(w, iters, finetune_iters) for (w, _), done in
                   zip(jobs[i - 1:], finished[i - 1:]) if not done)
        eta = f', ETA {per_iter * left / 60:.0f} min' if per_iter else ''
        if report_only and not was_done:
            continue
        print(f'[{i}/{len(jobs)}] {v.name} (width {v.widen:g}) seed {seed}'
              f'{" (done, skipped)" if was_done else ""}{eta}', flush=True)
        run_start = time.time()
        result = run_one(v, seed, iters, work, data_root, finetune_iters)
        results.append(result)
        if not was_done:
            done_s += time.time() - run_start
            done_iters += cost(v, iters, finetune_iters)
            print(f'    mAP {result["mAP"]:.3f}'
                  + (f', WQ {result["mAP_wq"]:.3f}' if 'mAP_wq' in result
                     else '')
                  + f', {result["bytes"]:,} bytes, '
                  f'{result["flops"] / 1e9:.3f} GFLOPs, '
                  f'{result["wall_s"] / 60:.1f} min', flush=True)
    return results
