import clip_inversion.api
from clip_inversion.api import invert
from clip_inversion.studies.report import contact_sheet


def test_invert_returns_images_and_records_through_the_cli_path(tmp_path, monkeypatch):
    clis, run = [], clip_inversion.api.run
    monkeypatch.setattr(clip_inversion.api, "run", lambda args: clis.append(run(args)))
    results = invert(
        ["a green cross", "a red star"],
        run_dir=tmp_path,
        args=[
            "--model.steps=3",
            "--model.init_size=24",
            "--trainer.enable_progress_bar=false",
            "--writer.snapshot_steps=[2]",
        ],
    )
    assert [r.prompt for r in results] == ["a green cross", "a red star"]
    for r in results:
        assert r.image.shape == (3, 24, 24) and r.image.min() >= 0 and r.image.max() <= 1
        assert r.record["steps"] == 3 and (tmp_path / r.record["image"]).is_file()
    # the image on disk is the module's final image, to PNG precision
    (cli,) = clis
    final = cli.model.inverter.image().detach().clamp(0, 1)
    for i, r in enumerate(results):
        assert (r.image - final[i]).abs().max() <= 0.5 / 255 + 1e-6

    sheet = contact_sheet(tmp_path, tmp_path / "sheet.png")
    from PIL import Image

    width, height = Image.open(sheet).size
    assert width > 2 * 96 and height >= 2 * 96  # two rows of two images (step 2 and final) beside labels
